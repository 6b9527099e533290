//! Preferences kept between sessions in eframe's storage. Never decisions: those live in the
//! decision store.

use std::path::{Path, PathBuf};

use crate::worklist::{Filter, SortSpec};

/// How many recent folders the File menu offers.
const RECENT_FOLDERS: usize = 8;

/// The key in eframe's storage.
pub(crate) const STORAGE_KEY: &str = "cxr-triage-preferences";

/// What the window remembers.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub(crate) struct Preferences {
    /// Folders opened recently, newest first.
    pub recent_folders: Vec<PathBuf>,
    /// The reader's name as last typed.
    pub reader: String,
    /// The worklist's sort order. Not kept between sessions: the list always opens sorted by
    /// score, highest first.
    #[serde(skip)]
    pub sort: SortSpec,
    /// The worklist's filter. Not kept between sessions: a window must never open on a list
    /// that silently hides studies.
    #[serde(skip)]
    pub filter: Filter,
    /// Whether zoom, pan and window are linked between the panes.
    pub link_views: bool,
    /// Opacity of the heat map over the study, 0 to 1 (a saved value below 0.05 is not
    /// carried over silently: see [`Preferences::restored`]).
    pub heat_opacity: f32,
    /// How long a study's full-resolution image must have been on screen before a decision on
    /// it is recorded, in seconds.
    pub min_view_secs: f32,
    /// The optional worklist columns that are switched on.
    pub columns: Columns,
}

/// A worklist column the reader can switch on or off (View > Columns). Each is drawn only when
/// some study of the folder has a value for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionalColumn {
    /// The patient's age and sex (DICOM).
    AgeSex,
    /// The study date (DICOM).
    StudyDate,
    /// The view position (DICOM).
    View,
    /// How long the study has waited.
    Waiting,
}

impl OptionalColumn {
    /// Every optional column, in the worklist's order.
    pub const ALL: [Self; 4] = [Self::Waiting, Self::AgeSex, Self::StudyDate, Self::View];

    /// The column's name in the View menu.
    pub fn menu_name(self) -> &'static str {
        match self {
            Self::AgeSex => "Age and sex (DICOM)",
            Self::StudyDate => "Study date (DICOM)",
            Self::View => "View position (DICOM)",
            Self::Waiting => "Waiting time",
        }
    }
}

/// Which optional columns are on. Only the waiting time is on at first (age, sex, date and view
/// are in the header): the list keeps room for the file name, score and decision on a laptop's
/// screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub(crate) struct Columns {
    /// The patient's age and sex.
    pub age_sex: bool,
    /// The study date.
    pub study_date: bool,
    /// The view position.
    pub view: bool,
    /// How long the study has waited.
    pub waiting: bool,
}

impl Default for Columns {
    fn default() -> Self {
        Self {
            age_sex: false,
            study_date: false,
            view: false,
            waiting: true,
        }
    }
}

impl Columns {
    /// Whether `column` is on.
    pub fn shows(self, column: OptionalColumn) -> bool {
        match column {
            OptionalColumn::AgeSex => self.age_sex,
            OptionalColumn::StudyDate => self.study_date,
            OptionalColumn::View => self.view,
            OptionalColumn::Waiting => self.waiting,
        }
    }

    /// Switches `column` on or off.
    pub fn toggle(&mut self, column: OptionalColumn) {
        let flag = match column {
            OptionalColumn::AgeSex => &mut self.age_sex,
            OptionalColumn::StudyDate => &mut self.study_date,
            OptionalColumn::View => &mut self.view,
            OptionalColumn::Waiting => &mut self.waiting,
        };
        *flag = !*flag;
    }
}

/// The default of [`Preferences::min_view_secs`].
pub(crate) const DEFAULT_MIN_VIEW_SECS: f32 = 0.5;

impl Default for Preferences {
    fn default() -> Self {
        Self {
            recent_folders: Vec::new(),
            reader: String::new(),
            sort: SortSpec::default(),
            filter: Filter::All,
            link_views: true,
            heat_opacity: 0.45,
            min_view_secs: DEFAULT_MIN_VIEW_SECS,
            columns: Columns::default(),
        }
    }
}

impl Preferences {
    /// The preferences as saved, made safe to start with: a heat map saved invisible (opacity
    /// below 0.05) comes back at the default opacity, with a sentence saying so.
    pub fn restored(mut self) -> (Self, Option<String>) {
        let default = Self::default().heat_opacity;
        if self.heat_opacity.is_finite() && self.heat_opacity >= 0.05 {
            return (self, None);
        }
        self.heat_opacity = default;
        let note = format!(
            "The heat map's opacity was 0 when the window was last closed; it is back to {:.0} % (the slider is above the right pane).",
            default * 100.0
        );
        (self, Some(note))
    }

    /// Puts `folder` first in the recent folders.
    pub fn remember_folder(&mut self, folder: &Path) {
        self.recent_folders.retain(|f| f != folder);
        self.recent_folders.insert(0, folder.to_owned());
        self.recent_folders.truncate(RECENT_FOLDERS);
    }
}

/// The operating system's name for the current user, the default reader name.
pub(crate) fn os_user() -> String {
    ["USER", "USERNAME", "LOGNAME"]
        .into_iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_folders_are_unique_newest_first_and_bounded() {
        let mut p = Preferences::default();
        for i in 0..10 {
            p.remember_folder(Path::new(&format!("/f{i}")));
        }
        p.remember_folder(Path::new("/f5"));
        assert_eq!(p.recent_folders.len(), RECENT_FOLDERS);
        assert_eq!(p.recent_folders[0], Path::new("/f5"));
        assert_eq!(p.recent_folders[1], Path::new("/f9"));
    }

    #[test]
    fn missing_fields_take_their_defaults() {
        let p: Preferences = serde_json::from_str(r#"{"reader":"dr a"}"#).unwrap();
        assert_eq!(p.reader, "dr a");
        assert!(p.link_views);
        assert_eq!(p.sort, SortSpec::default());
        assert_eq!(p.min_view_secs, DEFAULT_MIN_VIEW_SECS);
    }

    #[test]
    fn the_sort_is_not_remembered_and_an_invisible_heat_map_comes_back_with_a_note() {
        let p = Preferences {
            sort: SortSpec::default().clicked(crate::worklist::SortKey::Name),
            heat_opacity: 0.0,
            ..Preferences::default()
        };
        let back: Preferences = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back.sort, SortSpec::default());
        assert_eq!(back.heat_opacity, 0.0);
        let (restored, note) = back.restored();
        assert_eq!(restored.heat_opacity, Preferences::default().heat_opacity);
        assert!(note.unwrap().contains("opacity was 0"));
        let (kept, note) = Preferences {
            heat_opacity: 0.3,
            ..Preferences::default()
        }
        .restored();
        assert_eq!((kept.heat_opacity, note), (0.3, None));
    }

    #[test]
    fn optional_columns_toggle_and_are_remembered() {
        let mut p = Preferences::default();
        assert!(p.columns.shows(OptionalColumn::Waiting));
        assert!(!p.columns.shows(OptionalColumn::AgeSex));
        assert!(!p.columns.shows(OptionalColumn::View));
        p.columns.toggle(OptionalColumn::View);
        p.columns.toggle(OptionalColumn::AgeSex);
        assert!(p.columns.shows(OptionalColumn::View));
        assert!(p.columns.shows(OptionalColumn::AgeSex));
        let back: Preferences = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back.columns, p.columns);
        p.columns.toggle(OptionalColumn::View);
        p.columns.toggle(OptionalColumn::AgeSex);
        assert_eq!(p.columns, Columns::default());
    }

    #[test]
    fn the_filter_is_not_remembered() {
        let p = Preferences {
            filter: Filter::Errors,
            ..Preferences::default()
        };
        let back: Preferences = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back.filter, Filter::All);
    }
}
