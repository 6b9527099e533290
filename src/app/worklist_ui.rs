//! The worklist: counters, filters, progress and the sortable table of studies.

use egui::{Align, Color32, Layout, RichText, Sense, Stroke, Vec2};
use egui_extras::{Column, TableBuilder};

use super::{App, Command, OptionalColumn, theme};
use crate::worklist::{Filter, ReviewState, SortKey, SortSpec, StudyRow, Worklist};

/// Height of a table row, in points.
const ROW_HEIGHT: f32 = 22.0;

/// A column of the worklist table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Col {
    Rank,
    Score,
    Ai,
    DatasetLabel,
    Disagreement,
    Review,
    Name,
    Patient,
    StudyUid,
    Error,
    Waiting,
    AgeSex,
    StudyDate,
    View,
}

impl Col {
    fn title(self) -> &'static str {
        match self {
            Self::Rank => "#",
            Self::Score => "Score",
            Self::Ai => "AI",
            Self::DatasetLabel => "Label",
            Self::Disagreement => "Δ",
            Self::Review => "Reader",
            Self::Name => "Study",
            Self::Patient => "Patient",
            Self::StudyUid => "Study UID",
            Self::Error => "Error",
            Self::Waiting => "Waiting",
            Self::AgeSex => "Age/sex",
            Self::StudyDate => "Date",
            Self::View => "View",
        }
    }

    fn sort_key(self) -> SortKey {
        match self {
            Self::Rank | Self::Score => SortKey::Score,
            Self::Ai => SortKey::AiLabel,
            Self::DatasetLabel => SortKey::DatasetLabel,
            Self::Disagreement => SortKey::Disagreement,
            Self::Review => SortKey::Review,
            Self::Name => SortKey::Name,
            Self::Patient => SortKey::Patient,
            Self::StudyUid => SortKey::StudyUid,
            Self::Error => SortKey::Error,
            Self::Waiting => SortKey::Waiting,
            Self::AgeSex => SortKey::Age,
            Self::StudyDate => SortKey::StudyDate,
            Self::View => SortKey::View,
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Self::Rank => "Rank by score: 1 is the most likely pneumonia",
            Self::Score => "The model's pneumonia score, 0 to 1; the tick marks the threshold",
            Self::Ai => "The AI label: PNEUMONIA at or above the threshold",
            Self::DatasetLabel => {
                "The label the dataset gives (folder name NORMAL/PNEUMONIA, or --labels file)"
            }
            Self::Disagreement => {
                "|dataset label − score|: how far the label is from the score; likely label \
                 errors first"
            }
            Self::Review => {
                "The reader's decision: unreviewed, confirmed, overridden (to the reader's label), read elsewhere, not a chest film; files the model could not read need a manual read and come first"
            }
            Self::Name => {
                "The file's name, then its folder within the opened folder (hover for the full \
                 path)"
            }
            Self::Patient => "DICOM patient ID",
            Self::StudyUid => "DICOM study instance UID",
            Self::Error => "Why the study could not be read or scored",
            Self::Waiting => {
                "How long the study has waited: since its DICOM study date and time, else since \
                 the file reached the folder"
            }
            Self::AgeSex => "The patient's age and sex (DICOM Patient's Age and Sex); sorts by age",
            Self::StudyDate => "The study date (DICOM Study Date)",
            Self::View => "The view position (DICOM View Position: PA, AP, lateral…)",
        }
    }

    /// The column's width, at first.
    fn initial_width(self) -> f32 {
        match self {
            Self::Rank => 28.0,
            Self::Score => 92.0,
            Self::Ai | Self::DatasetLabel => 74.0,
            Self::Disagreement => 38.0,
            Self::Review | Self::Name | Self::StudyUid => 120.0,
            Self::Patient => 90.0,
            Self::Error => 260.0,
            Self::Waiting => 58.0,
            Self::AgeSex => 52.0,
            Self::View => 40.0,
            Self::StudyDate => 78.0,
        }
    }

    fn column(self) -> Column {
        match self {
            Self::Rank => Column::exact(28.0),
            Self::Score => Column::exact(92.0),
            Self::Ai | Self::DatasetLabel => Column::exact(74.0),
            Self::Disagreement => Column::exact(38.0),
            Self::Review => Column::initial(120.0).at_least(60.0).clip(true),
            Self::Name => Column::initial(150.0).at_least(80.0).clip(true),
            Self::Patient => Column::initial(90.0).at_least(50.0).clip(true),
            Self::StudyUid => Column::initial(120.0).at_least(50.0).clip(true),
            Self::Error => Column::initial(260.0).at_least(80.0).clip(true),
            Self::Waiting => Column::initial(58.0).at_least(40.0).clip(true),
            Self::AgeSex => Column::initial(52.0).at_least(30.0).clip(true),
            Self::View => Column::initial(40.0).at_least(30.0).clip(true),
            Self::StudyDate => Column::initial(78.0).at_least(50.0).clip(true),
        }
    }
}

impl App {
    /// Draws the worklist panel.
    pub(super) fn worklist_ui(&mut self, ui: &mut egui::Ui) {
        let Some(s) = &self.session else {
            self.welcome_ui(ui);
            return;
        };
        let folder = s.root.file_name().map_or_else(
            || s.root.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        ui.horizontal(|ui| {
            ui.label(RichText::new(folder).heading().strong())
                .on_hover_text(s.root.display().to_string());
            ui.with_layout(Layout::right_to_left(Align::Center), |ui| {
                ui.label(
                    RichText::new(format!(
                        "{} reviewed of {}",
                        s.order.counts.reviewed, s.order.counts.total
                    ))
                    .strong(),
                );
            });
        });
        if !s.listed {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Listing the folder…");
            });
            return;
        }
        if s.is_scoring() {
            let total = s.order.counts.total.max(1);
            let done = s.progress.done;
            let secs = s.started.elapsed().as_secs_f64().max(0.001);
            let rate = done as f64 / secs;
            let left = if rate > 0.0 {
                format!(
                    " · about {} left",
                    duration_words((total - done.min(total)) as f64 / rate)
                )
            } else {
                String::new()
            };
            ui.add(
                egui::ProgressBar::new(done as f32 / total as f32)
                    .desired_height(16.0)
                    .text(format!("Scoring {done} of {total} · {rate:.0}/s{left}")),
            );
        } else if let Some(t) = s.progress.finished_secs {
            let what = if s.progress.cancelled {
                "stopped"
            } else {
                "scored"
            };
            ui.label(
                RichText::new(format!(
                    "{} studies {what} in {} · {} could not be read or scored",
                    s.order.counts.scored,
                    duration_words(t),
                    s.order.counts.failed
                ))
                .color(theme::TEXT_DIM),
            );
        }
        ui.add_space(2.0);
        let counts = s.order.counts;
        let has_labels = s.worklist.has_dataset_labels();
        ui.horizontal_wrapped(|ui| {
            for filter in Filter::ALL {
                let on = self.prefs.filter == filter;
                if filter == Filter::SecondReads && !on && counts.second_reads == 0 {
                    // Only where several readers share the store.
                    continue;
                }
                let text = format!("{} {}", filter.as_str(), counts.of(filter));
                if ui
                    .selectable_label(on, text)
                    .on_hover_text(filter_hint(filter))
                    .clicked()
                    && !on
                {
                    self.commands.send(Command::SetFilter(filter));
                }
            }
            if has_labels {
                ui.separator();
                let on = self.prefs.sort.key == SortKey::Disagreement && self.prefs.sort.descending;
                if ui
                    .selectable_label(on, "Likely label errors first")
                    .on_hover_text(
                        "Label correction: sort by |dataset label − score|, largest first",
                    )
                    .clicked()
                {
                    let sort = if on {
                        SortSpec::default()
                    } else {
                        SortSpec {
                            key: SortKey::Disagreement,
                            descending: true,
                        }
                    };
                    self.commands.send(Command::SetSort(sort));
                }
            }
        });
        if counts.overdue > 0
            && let Some(limit) = self.config.wait_limit
        {
            let minutes = limit.as_secs() / 60;
            let studies = if counts.overdue == 1 {
                "1 study has".to_owned()
            } else {
                format!("{} studies have", counts.overdue)
            };
            ui.label(
                RichText::new(format!(
                    "{studies} waited over {minutes} min unread: shown first, whatever the score"
                ))
                .color(theme::WARNING),
            )
            .on_hover_text(
                "The waiting-time cap: waiting counts from the DICOM study time, else from the \
                 file's arrival in the folder (cxr-triage open --wait-limit MINUTES; 0 turns it \
                 off).",
            );
        }
        ui.add_space(4.0);
        if counts.total == 0 {
            ui.label(
                RichText::new("This folder holds no files (hidden files are skipped).")
                    .color(theme::TEXT_DIM),
            );
            return;
        }
        self.table_ui(ui);
    }

    fn welcome_ui(&mut self, ui: &mut egui::Ui) {
        ui.add_space(24.0);
        ui.vertical_centered(|ui| {
            ui.label(RichText::new("No folder open").heading());
            ui.add_space(8.0);
            if ui
                .add(egui::Button::new("Open folder…").min_size(Vec2::new(160.0, 28.0)))
                .clicked()
            {
                self.commands.send(Command::ChooseFolder);
            }
            ui.add(
                egui::Label::new(
                    RichText::new(
                        "or drop a folder of chest X-rays (JPEG, PNG, DICOM) on this window",
                    )
                    .color(theme::TEXT_DIM),
                )
                .wrap(),
            );
            ui.add_space(12.0);
            // The nine demo films that come with cxr-triage (beside the executable, in the
            // installed data folder, or in the source tree).
            match crate::install::find_demo_folder() {
                Ok(demo) => {
                    if ui
                        .add(
                            egui::Button::new("Open the demo studies")
                                .min_size(Vec2::new(160.0, 28.0)),
                        )
                        .on_hover_text(demo.display().to_string())
                        .clicked()
                    {
                        self.commands.send(Command::OpenFolder(demo));
                    }
                }
                Err(why) => {
                    ui.add_enabled(false, egui::Button::new("Open the demo studies"))
                        .on_disabled_hover_text(why);
                }
            }
        });
        if !self.prefs.recent_folders.is_empty() {
            ui.add_space(16.0);
            ui.label(RichText::new("Recent folders").strong());
            for folder in self.prefs.recent_folders.clone() {
                if ui.link(folder.display().to_string()).clicked() {
                    self.commands.send(Command::OpenFolder(folder));
                }
            }
        }
    }

    fn table_ui(&mut self, ui: &mut egui::Ui) {
        let Some(s) = &self.session else { return };
        let w = &s.worklist;
        let mut cols = vec![Col::Rank, Col::Name, Col::Score, Col::Ai];
        if w.has_dataset_labels() {
            cols.extend([Col::DatasetLabel, Col::Disagreement]);
        }
        cols.push(Col::Review);
        let on = self.prefs.columns;
        let present = s.present;
        for (column, col, has) in [
            (OptionalColumn::Waiting, Col::Waiting, present.waiting),
            (OptionalColumn::AgeSex, Col::AgeSex, present.age_sex),
            (
                OptionalColumn::StudyDate,
                Col::StudyDate,
                present.study_date,
            ),
            (OptionalColumn::View, Col::View, present.view),
        ] {
            if on.shows(column) && has {
                cols.push(col);
            }
        }
        if cols.contains(&Col::Waiting) {
            // Waiting times are shown to the minute.
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_secs(30));
        }
        let now = std::time::SystemTime::now();
        let blind_first = self.config.blind_first;
        if s.order.counts.failed > 0 {
            cols.push(Col::Error);
        }
        if present.patient_id {
            cols.push(Col::Patient);
        }
        if present.study_uid {
            cols.push(Col::StudyUid);
        }

        let sort = self.prefs.sort;
        let mut clicked_sort = None;
        let mut clicked_row = None;
        let selected = s.selected;
        let scroll_to = self
            .scroll_to_selected
            .then(|| selected.and_then(|id| s.order.view.iter().position(|&v| v == id)))
            .flatten();
        egui::ScrollArea::horizontal()
            .id_salt("worklist-hscroll")
            .show(ui, |ui| {
                // The name takes the panel's width that the other columns leave.
                let others: f32 = cols
                    .iter()
                    .filter(|&&c| c != Col::Name)
                    .map(|c| c.initial_width() + 6.0)
                    .sum();
                let name_width = (ui.available_width() - others - 12.0).max(120.0);
                let mut table = TableBuilder::new(ui)
                    .id_salt(("worklist", s.generation))
                    .striped(true)
                    .resizable(true)
                    .sense(Sense::click())
                    .cell_layout(Layout::left_to_right(Align::Center));
                for &col in &cols {
                    table = table.column(if col == Col::Name {
                        Column::exact(name_width).clip(true)
                    } else {
                        col.column()
                    });
                }
                if let Some(row) = scroll_to {
                    table = table.scroll_to_row(row, None);
                }
                table
                    .header(24.0, |mut header| {
                        for &col in &cols {
                            header.col(|ui| {
                                let sorted = sort.key == col.sort_key() && col != Col::Rank;
                                let arrow = match (sorted, sort.descending) {
                                    (false, _) => "",
                                    (true, true) => "▼",
                                    (true, false) => "▲",
                                };
                                // The arrows are in the monospace font (the proportional
                                // one has no geometric shapes).
                                let text = (
                                    RichText::new(col.title()).strong(),
                                    RichText::new(arrow).monospace().color(theme::ACCENT),
                                );
                                if ui
                                    .add(egui::Button::new(text).frame(false))
                                    .on_hover_text(format!("{}. Click to sort.", col.hint()))
                                    .clicked()
                                {
                                    clicked_sort = Some(sort.clicked(col.sort_key()));
                                }
                            });
                        }
                    })
                    .body(|body| {
                        body.rows(ROW_HEIGHT, s.order.view.len(), |mut table_row| {
                            let id = s.order.view[table_row.index()];
                            let Some(row) = w.row(id) else { return };
                            table_row.set_selected(selected == Some(id));
                            let hidden = super::command::ai_hidden(blind_first, w, row);
                            for &col in &cols {
                                table_row.col(|ui| {
                                    if hidden && matches!(col, Col::Rank | Col::Score | Col::Ai) {
                                        ui.label(RichText::new("·").color(theme::TEXT_DIM))
                                            .on_hover_text(
                                                "Blind-first reading: shown after your call",
                                            );
                                    } else {
                                        cell_ui(
                                            ui,
                                            col,
                                            w,
                                            row,
                                            s.order.ranks.get(id.0).copied().flatten(),
                                            now,
                                        );
                                    }
                                });
                            }
                            if table_row.response().clicked() {
                                clicked_row = Some(id);
                            }
                        });
                    });
            });
        self.scroll_to_selected = false;
        if let Some(sort) = clicked_sort {
            self.commands.send(Command::SetSort(sort));
        }
        if let Some(id) = clicked_row {
            self.commands.send(Command::Select(id));
        }
    }
}

fn cell_ui(
    ui: &mut egui::Ui,
    col: Col,
    w: &Worklist,
    row: &StudyRow,
    rank: Option<usize>,
    now: std::time::SystemTime,
) {
    let dim = theme::TEXT_DIM;
    match col {
        Col::Rank => {
            ui.label(
                RichText::new(rank.map_or_else(|| "–".to_owned(), |r| r.to_string())).color(dim),
            );
        }
        Col::Score => match row.score_value() {
            Some(score) => {
                score_cell_ui(ui, score, w.threshold());
                if let Some(warning) = &row.scope_warning {
                    scope_marker_ui(ui, warning);
                }
            }
            None if row.error().is_some() => {
                ui.label(RichText::new("failed").color(theme::ERROR))
                    .on_hover_text(row.error().unwrap_or_default());
            }
            None => {
                ui.label(RichText::new("…").color(dim));
            }
        },
        Col::Ai => match w.ai_label(row) {
            Some(l) => {
                ui.label(
                    RichText::new(l.as_str())
                        .color(theme::label_colour(l))
                        .size(12.0),
                );
            }
            None => {
                ui.label(RichText::new("–").color(dim));
            }
        },
        Col::DatasetLabel => match row.dataset_label {
            Some(d) => {
                ui.label(
                    RichText::new(d.label.as_str())
                        .color(theme::label_colour(d.label))
                        .size(12.0),
                )
                .on_hover_text(format!("From the {}", d.source.as_str()));
            }
            None => {
                ui.label(RichText::new("–").color(dim));
            }
        },
        Col::Disagreement => match row.disagreement() {
            Some(d) => {
                let colour = if d >= 0.5 { theme::WARNING } else { dim };
                ui.label(RichText::new(format!("{d:.2}")).monospace().color(colour));
            }
            None => {
                ui.label(RichText::new("–").color(dim));
            }
        },
        Col::Review => review_cell_ui(ui, w, row),
        Col::Name => {
            let (file, folder) = split_name(&row.name);
            let mut job = egui::text::LayoutJob::default();
            let style = ui.style();
            job.append(
                file,
                0.0,
                egui::TextFormat::simple(
                    egui::TextStyle::Body.resolve(style),
                    style.visuals.text_color(),
                ),
            );
            if !folder.is_empty() {
                job.append(
                    folder,
                    8.0,
                    egui::TextFormat::simple(egui::TextStyle::Small.resolve(style), dim),
                );
            }
            ui.add(egui::Label::new(job).truncate())
                .on_hover_text(row.path.display().to_string());
        }
        Col::Waiting => match row.facts.waited(now) {
            Some(waited) => {
                let from = row.facts.waiting_since.map(|(_, from)| from.as_str());
                let text = crate::worklist::waiting_text(waited);
                if w.is_overdue(row) {
                    ui.label(RichText::new(text).color(theme::WARNING).strong())
                        .on_hover_text(format!(
                            "{}; waited past the site's limit, so it is shown at the top whatever \
                             its score",
                            from.unwrap_or_default()
                        ));
                } else {
                    ui.label(text).on_hover_text(from.unwrap_or_default());
                }
            }
            None => {
                ui.label(RichText::new("–").color(dim));
            }
        },
        Col::AgeSex => optional_text_ui(ui, row.facts.age_sex_text().as_deref()),
        Col::StudyDate => optional_text_ui(ui, row.facts.date_text().as_deref()),
        Col::View => optional_text_ui(ui, row.facts.view.as_deref()),
        Col::Patient => {
            ui.label(row.patient_id.as_deref().unwrap_or("–"));
        }
        Col::StudyUid => {
            let uid = row.study_uid.as_deref().unwrap_or("–");
            ui.label(RichText::new(uid).color(dim)).on_hover_text(uid);
        }
        Col::Error => {
            if let Some(e) = row.error() {
                ui.label(RichText::new(e).color(theme::ERROR))
                    .on_hover_text(e);
            }
        }
    }
}

/// A value, or a dash when it is unknown.
fn optional_text_ui(ui: &mut egui::Ui, text: Option<&str>) {
    match text {
        Some(t) => ui.label(t),
        None => ui.label(RichText::new("–").color(theme::TEXT_DIM)),
    };
}

/// A study's name relative to the opened folder, as (file name, folder): the file name is what
/// tells rows apart, so it comes first.
pub(super) fn split_name(name: &str) -> (&str, &str) {
    match name.rfind(['/', '\\']) {
        Some(i) => (&name[i + 1..], &name[..i]),
        None => (name, ""),
    }
}

/// The score as a number and a bar with the threshold marked.
fn score_cell_ui(ui: &mut egui::Ui, score: f32, threshold: Option<f32>) {
    ui.label(RichText::new(score_text(score)).monospace());
    let (rect, _) = ui.allocate_exact_size(Vec2::new(38.0, 8.0), Sense::hover());
    let painter = ui.painter();
    painter.rect_filled(rect, 2.0, Color32::from_rgb(0x30, 0x34, 0x3b));
    let colour = match threshold {
        Some(t) if score >= t => theme::PNEUMONIA,
        Some(_) => theme::NORMAL,
        None => theme::TEXT_DIM,
    };
    let mut fill = rect;
    fill.set_width(rect.width() * score.clamp(0.0, 1.0));
    painter.rect_filled(fill, 2.0, colour);
    if let Some(t) = threshold {
        let x = rect.left() + rect.width() * t.clamp(0.0, 1.0);
        painter.line_segment(
            [
                egui::pos2(x, rect.top() - 2.0),
                egui::pos2(x, rect.bottom() + 2.0),
            ],
            Stroke::new(1.0, theme::TEXT),
        );
    }
}

/// A small warning triangle: the study is outside what the model has seen.
fn scope_marker_ui(ui: &mut egui::Ui, warning: &str) {
    let (rect, response) = ui.allocate_exact_size(Vec2::new(10.0, 10.0), Sense::hover());
    ui.painter().add(egui::Shape::convex_polygon(
        vec![
            egui::pos2(rect.center().x, rect.top()),
            egui::pos2(rect.right(), rect.bottom()),
            egui::pos2(rect.left(), rect.bottom()),
        ],
        theme::WARNING,
        Stroke::NONE,
    ));
    response.on_hover_text(warning);
}

fn review_cell_ui(ui: &mut egui::Ui, w: &Worklist, row: &StudyRow) {
    let state = w.review_state(row);
    let final_label = row.final_label;
    match (state, final_label) {
        (ReviewState::ReadElsewhere | ReviewState::NotChestFilm, _) => {
            ui.label(RichText::new(state.as_str()).color(theme::TEXT))
                .on_hover_text("Closed by the reader without a label");
        }
        (ReviewState::Unreviewed, _) | (_, None) if w.needs_manual_read(row) => {
            ui.label(
                RichText::new("needs a manual read")
                    .color(theme::WARNING)
                    .strong(),
            )
            .on_hover_text(
                "The model could not read this file: a reader must read it, record it as read \
                 elsewhere, or as not a chest film",
            );
        }
        _ if row.second_read_due => {
            ui.label(RichText::new("second read due").color(theme::ACCENT))
                .on_hover_text(
                    "Another reader's call on this study is queued for your second read: it is \
                     hidden until you decide",
                );
        }
        (ReviewState::Unreviewed, _) | (_, None) => match &row.claimed_by {
            Some(reader) => {
                ui.label(RichText::new(format!("being read by {reader}")).color(theme::WARNING))
                    .on_hover_text(
                        "Another reader has this study open: \"next unreviewed\" skips it",
                    );
            }
            None => {
                ui.label(RichText::new("unreviewed").color(theme::TEXT_DIM));
            }
        },
        (ReviewState::Confirmed, Some(l)) => {
            ui.label(RichText::new(format!("confirmed {l}")).color(theme::label_colour(l)))
                .on_hover_text(format!("The reader agreed with the AI: {l}"));
        }
        (ReviewState::Overridden, Some(l)) => {
            ui.label(
                RichText::new(format!("overridden to {l}"))
                    .color(theme::label_colour(l))
                    .strong(),
            )
            .on_hover_text(format!("The reader changed the AI label to {l}"));
        }
        (ReviewState::Labelled, Some(l)) => {
            ui.label(RichText::new(format!("labelled {l}")).color(theme::label_colour(l)))
                .on_hover_text(format!("The reader set {l}; there is no AI label"));
        }
    }
}

fn filter_hint(filter: Filter) -> &'static str {
    match filter {
        Filter::All => "Every study of the folder",
        Filter::Unreviewed => "Studies without a reader's decision",
        Filter::Disagreements => "Studies whose reader's label differs from the AI label",
        Filter::Errors => "Studies that could not be read or scored",
        Filter::SecondReads => {
            "Studies another reader called that are queued for your second read (every override \
             of the AI, and a sampled share): the first read is hidden until you decide"
        }
    }
}

/// A score as the worklist shows it: three decimals, or five within 0.001 of 0 or 1, so that
/// near-certain studies (which would all read 1.000) can still be told apart.
pub(super) fn score_text(score: f32) -> String {
    if !(0.001..0.999).contains(&score) {
        format!("{score:.5}")
    } else {
        format!("{score:.3}")
    }
}

/// A duration in words: "42 s", "3 min 5 s".
fn duration_words(secs: f64) -> String {
    let secs = secs.max(0.0).round() as u64;
    if secs < 60 {
        format!("{secs} s")
    } else if secs < 3600 {
        format!("{} min {} s", secs / 60, secs % 60)
    } else {
        format!("{} h {} min", secs / 3600, (secs % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_near_0_and_1_keep_more_decimals() {
        assert_eq!(score_text(0.5), "0.500");
        assert_eq!(score_text(0.99987), "0.99987");
        assert_ne!(score_text(0.99991), score_text(0.99987));
        assert_eq!(score_text(0.00042), "0.00042");
        assert_eq!(score_text(0.998), "0.998");
    }

    #[test]
    fn the_file_name_comes_before_its_folder() {
        assert_eq!(
            split_name("site/ward 3/2024/film-0042.dcm"),
            ("film-0042.dcm", "site/ward 3/2024")
        );
        assert_eq!(split_name("a.jpg"), ("a.jpg", ""));
        assert_eq!(split_name("x\\y.png"), ("y.png", "x"));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_words(4.4), "4 s");
        assert_eq!(duration_words(185.0), "3 min 5 s");
        assert_eq!(duration_words(7300.0), "2 h 1 min");
    }
}
