//! The evaluation report: metrics, `report.json`, and PNG plots (ROC with the operating point,
//! calibration, score histogram per class) drawn with plotters.

use std::path::Path;

use plotters::prelude::*;
use rayon::prelude::*;

use crate::model::card::{EpochRecord, EvalSummary, SourceSummary};
use crate::model::classifier::{Classifier, ModelError};
use crate::model::dataset::{self, DatasetError};
use crate::model::metrics::{self, CalibrationBin, RocPoint};
use crate::worklist::Label;

/// Everything `eval` measures, as written to `report.json`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalReport {
    /// The model evaluated.
    pub model_id: String,
    /// SHA-256 of its weights.
    pub weights_sha256: String,
    /// The data folder.
    pub data: String,
    /// Metrics at the model's triage threshold (and at 0.5 inside).
    pub summary: EvalSummary,
    /// The ROC curve.
    pub roc: Vec<RocPoint>,
    /// Reliability diagram, 10 bins.
    pub calibration: Vec<CalibrationBin>,
    /// The same metrics for each label source, where the films' labels come from more than
    /// one (for example RSNA radiologists and NIH text mining).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub label_sources: Vec<SourceSummary>,
    /// Per image: path relative to the data folder, label (true = pneumonia) and score.
    pub cases: Vec<EvalCase>,
    /// Images that could not be read, with the reason.
    pub failed: Vec<(String, String)>,
}

/// One scored image.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalCase {
    /// Path relative to the data folder.
    pub path: String,
    /// True for pneumonia.
    pub pneumonia: bool,
    /// The model's probability of pneumonia.
    pub score: f32,
    /// Who gave the label, where the data says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_source: Option<String>,
    /// How unlike the training films the image is (see [`crate::model::ood`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ood_distance: Option<f32>,
}

impl EvalReport {
    /// Builds the report from scored cases.
    pub fn new(
        model_id: &str,
        weights_sha256: &str,
        data: &str,
        threshold: f32,
        cases: Vec<EvalCase>,
        failed: Vec<(String, String)>,
    ) -> Self {
        let scores: Vec<f32> = cases.iter().map(|c| c.score).collect();
        let labels: Vec<bool> = cases.iter().map(|c| c.pneumonia).collect();
        let mut groups: Vec<&str> = cases
            .iter()
            .filter_map(|c| c.label_source.as_deref())
            .collect();
        groups.sort_unstable();
        groups.dedup();
        let label_sources = if groups.len() > 1 {
            groups
                .iter()
                .map(|&g| {
                    let of: Vec<&EvalCase> = cases
                        .iter()
                        .filter(|c| c.label_source.as_deref() == Some(g))
                        .collect();
                    let s: Vec<f32> = of.iter().map(|c| c.score).collect();
                    let l: Vec<bool> = of.iter().map(|c| c.pneumonia).collect();
                    SourceSummary {
                        name: g.to_owned(),
                        description: format!("labels from {g}"),
                        summary: EvalSummary::compute(&s, &l, threshold, 2018),
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        Self {
            model_id: model_id.to_owned(),
            weights_sha256: weights_sha256.to_owned(),
            data: data.to_owned(),
            summary: EvalSummary::compute(&scores, &labels, threshold, 2018),
            roc: metrics::roc_curve(&scores, &labels),
            calibration: metrics::calibration(&scores, &labels, 10).0,
            label_sources,
            cases,
            failed,
        }
    }

    /// The human-readable summary `eval` prints.
    pub fn text(&self) -> String {
        let mut text = self.summary_text();
        for g in &self.label_sources {
            let v = &g.summary;
            text += &format!(
                "\n{} ({} films: {} pneumonia, {} normal): AUC {:.4} (95% CI {:.4} to {:.4}), \
                 sensitivity {:.1}%, specificity {:.1}%, accuracy {:.1}%",
                g.description,
                v.images,
                v.pneumonia,
                v.normal,
                v.auc.estimate,
                v.auc.low,
                v.auc.high,
                100.0 * v.sensitivity,
                100.0 * v.specificity,
                100.0 * v.accuracy
            );
        }
        text
    }

    fn summary_text(&self) -> String {
        let s = &self.summary;
        let pct = |v: f64| format!("{:.1}%", 100.0 * v);
        let matrix = |c: &metrics::Confusion| {
            format!(
                "                 called PNEUMONIA  called NORMAL\n  \
                 PNEUMONIA      {:>16}  {:>13}\n  \
                 NORMAL         {:>16}  {:>13}",
                c.tp, c.fn_, c.fp, c.tn
            )
        };
        format!(
            "model {} on {} ({} images: {} pneumonia, {} normal{})\n\
             ROC AUC      {:.4}  (95% CI {:.4} to {:.4}, bootstrap)\n\
             at the triage threshold {:.4}:\n  \
             accuracy {}  sensitivity {}  specificity {}  PPV {}  NPV {}\n  \
             (95% CI, Wilson: sensitivity {} to {}, specificity {} to {})\n{}\n\
             at 0.5:\n  accuracy {}  sensitivity {}  specificity {}\n{}\n\
             calibration: ECE {:.4} (10 bins)",
            self.model_id,
            self.data,
            s.images,
            s.pneumonia,
            s.normal,
            if self.failed.is_empty() {
                String::new()
            } else {
                format!("; {} unreadable", self.failed.len())
            },
            s.auc.estimate,
            s.auc.low,
            s.auc.high,
            s.threshold,
            pct(s.accuracy),
            pct(s.sensitivity),
            pct(s.specificity),
            pct(s.ppv),
            pct(s.npv),
            pct(s.confusion.sensitivity_interval().low),
            pct(s.confusion.sensitivity_interval().high),
            pct(s.confusion.specificity_interval().low),
            pct(s.confusion.specificity_interval().high),
            matrix(&s.confusion),
            pct(s.accuracy_at_half),
            pct(s.confusion_at_half.sensitivity()),
            pct(s.confusion_at_half.specificity()),
            matrix(&s.confusion_at_half),
            s.ece,
        )
    }
}

/// Evaluating a folder failed as a whole (single unreadable images are listed in the report).
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The folder is not a labelled folder.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Scores every image of `dir/NORMAL` and `dir/PNEUMONIA` with `classifier` (decoding in
/// parallel, inference in batches) and builds the report. `on_progress` gets the number of
/// images done after each batch.
pub fn evaluate_folder(
    classifier: &Classifier,
    dir: &Path,
    on_progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport, EvalError> {
    let samples = dataset::list_labelled(dir)?;
    evaluate_samples(classifier, dir, &samples, on_progress)
}

/// Scores `samples` (paths under `dir`) with `classifier` and builds the report, as
/// [`evaluate_folder`] does.
pub fn evaluate_samples(
    classifier: &Classifier,
    dir: &Path,
    samples: &[dataset::Sample],
    on_progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport, EvalError> {
    let rel = |p: &Path| p.strip_prefix(dir).unwrap_or(p).display().to_string();
    let mut cases = Vec::with_capacity(samples.len());
    let mut failed = Vec::new();
    let mut done = 0;
    for chunk in samples.chunks(64) {
        let prepared: Vec<Result<Vec<f32>, String>> = chunk
            .par_iter()
            .map(|s| {
                let (image, window) = dataset::load_image(&s.path)?;
                classifier
                    .prepare(&image, window)
                    .map_err(|e| e.to_string())
            })
            .collect();
        let mut inputs = Vec::with_capacity(chunk.len());
        let mut scored = Vec::with_capacity(chunk.len());
        for (s, p) in chunk.iter().zip(prepared) {
            match p {
                Ok(x) => {
                    inputs.push(x);
                    scored.push(s);
                }
                Err(e) => failed.push((rel(&s.path), e)),
            }
        }
        let assessed = classifier.assess_prepared(&inputs)?;
        for (s, a) in scored.into_iter().zip(assessed) {
            cases.push(EvalCase {
                path: rel(&s.path),
                pneumonia: s.label == Label::Pneumonia,
                score: a.score,
                label_source: s.label_source.clone(),
                ood_distance: a.ood_distance,
            });
        }
        done += chunk.len();
        on_progress(done, samples.len());
    }
    let card = classifier.card();
    Ok(EvalReport::new(
        &card.model_id,
        &card.weights_sha256,
        &dir.display().to_string(),
        card.threshold,
        cases,
        failed,
    ))
}

/// Drawing a plot failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw {name}: {reason}")]
pub struct PlotError {
    name: String,
    reason: String,
}

pub(crate) fn plot_err(name: &str) -> impl Fn(String) -> PlotError + '_ {
    move |reason| PlotError {
        name: name.to_owned(),
        reason,
    }
}

/// Draws the chart's legend at `position` in the house style (white box, thin border).
pub(crate) fn draw_legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
    font_size: u32,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", font_size))
        .draw()
        .map_err(|e| e.to_string())
}

pub(crate) fn register_font() {
    // Idempotent: a second registration replaces the same font.
    let _ = plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        epaint_default_fonts::UBUNTU_LIGHT,
    );
}

/// Writes `roc.png`, `calibration.png` and `histogram.png` into `dir`.
pub fn write_plots(report: &EvalReport, dir: &Path) -> Result<(), PlotError> {
    register_font();
    roc_plot(report, &dir.join("roc.png")).map_err(plot_err("the ROC curve"))?;
    calibration_plot(report, &dir.join("calibration.png"))
        .map_err(plot_err("the calibration curve"))?;
    histogram_plot(report, &dir.join("histogram.png")).map_err(plot_err("the score histogram"))?;
    Ok(())
}

/// Writes `training.png` into `dir`: training and validation loss and validation AUC per epoch of
/// the model's training record, and the test split's when it was recorded (`train
/// --test-curve`); nothing when the record has no epochs.
pub fn write_training_plot(
    history: &[EpochRecord],
    best_epoch: usize,
    dir: &Path,
) -> Result<(), PlotError> {
    if history.is_empty() {
        return Ok(());
    }
    register_font();
    training_plot(history, best_epoch, &dir.join("training.png"))
        .map_err(plot_err("the training curves"))
}

fn training_plot(history: &[EpochRecord], best_epoch: usize, path: &Path) -> Result<(), String> {
    let root = BitMapBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(500);
    let last = history.iter().map(|r| r.epoch).max().unwrap_or(1) as f64;
    let epochs = 0.5..last + 0.5;
    let test_colour = RGBColor(0, 150, 70);
    let with_test = history.iter().any(|r| r.test.is_some());
    type Value = fn(&EpochRecord) -> Option<f64>;
    let curves = |loss: bool| -> Vec<(&'static str, RGBColor, Value)> {
        let mut curves: Vec<(&'static str, RGBColor, Value)> = Vec::new();
        if loss {
            curves.push(("training", BLUE, |r| Some(r.train_loss)));
            curves.push(("validation", RED, |r| Some(r.validation_loss)));
            curves.push(("test (not used for choices)", test_colour, |r| {
                r.test.as_ref().map(|t| t.loss)
            }));
        } else {
            curves.push(("validation", RED, |r| Some(r.validation_auc)));
            curves.push(("test (not used for choices)", test_colour, |r| {
                r.test.as_ref().map(|t| t.auc)
            }));
        }
        curves
    };
    // Loss panel: up to the largest loss drawn, but no further than 2.5 (an early validation
    // spike would flatten the rest).
    let top = history
        .iter()
        .flat_map(|r| {
            [
                Some(r.train_loss),
                Some(r.validation_loss),
                r.test.as_ref().map(|t| t.loss),
            ]
        })
        .flatten()
        .fold(1e-3, f64::max)
        .min(2.5)
        * 1.05;
    // AUC panel: from just below the lowest value shown.
    let low = history
        .iter()
        .flat_map(|r| [Some(r.validation_auc), r.test.as_ref().map(|t| t.auc)])
        .flatten()
        .fold(1.0, f64::min);
    let low = (low - 0.002).clamp(0.0, 0.998);
    for (area, loss) in [(&left, true), (&right, false)] {
        let caption = match (loss, with_test) {
            (true, _) => "Loss (weighted cross-entropy)",
            (false, true) => "ROC AUC",
            (false, false) => "Validation ROC AUC",
        };
        let (range, clip) = if loss {
            (0.0..top, top)
        } else {
            (low..1.0, 1.0)
        };
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(65)
            .build_cartesian_2d(epochs.clone(), range)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_label_formatter(&|v| format!("{v:.3}"))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
        for (name, colour, value) in curves(loss) {
            let points: Vec<(f64, f64)> = history
                .iter()
                .filter_map(|r| value(r).map(|v| (r.epoch as f64, v.min(clip))))
                .collect();
            if points.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }
        // The epoch whose weights were kept, on its validation AUC.
        if let Some(best) = history
            .iter()
            .find(|r| r.epoch == best_epoch)
            .filter(|_| !loss)
        {
            chart
                .draw_series([Circle::new(
                    (best.epoch as f64, best.validation_auc),
                    6,
                    BLACK.filled(),
                )])
                .map_err(|e| e.to_string())?
                .label(format!(
                    "kept: epoch {}, validation AUC {:.4}",
                    best.epoch, best.validation_auc
                ))
                .legend(|(x, y)| Circle::new((x + 10, y), 5, BLACK.filled()));
        }
        draw_legend(
            &mut chart,
            if loss {
                SeriesLabelPosition::UpperRight
            } else {
                SeriesLabelPosition::LowerRight
            },
            14,
        )?;
    }
    root.present().map_err(|e| e.to_string())
}

fn roc_plot(report: &EvalReport, path: &Path) -> Result<(), String> {
    let root = BitMapBackend::new(path, (640, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let s = &report.summary;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "ROC, AUC {:.4} [{:.4}, {:.4}]",
                s.auc.estimate, s.auc.low, s.auc.high
            ),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("1 - specificity")
        .y_desc("sensitivity")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.3)))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(LineSeries::new(
            report
                .roc
                .iter()
                .map(|p| (p.false_positive_rate, p.true_positive_rate)),
            BLUE.stroke_width(2),
        ))
        .map_err(|e| e.to_string())?
        .label("model")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    let op = (1.0 - s.specificity, s.sensitivity);
    chart
        .draw_series([Circle::new(op, 6, RED.filled())])
        .map_err(|e| e.to_string())?
        .label(format!(
            "threshold {:.3}: sens {:.3}, spec {:.3}",
            s.threshold, s.sensitivity, s.specificity
        ))
        .legend(|(x, y)| Circle::new((x + 10, y), 5, RED.filled()));
    draw_legend(&mut chart, SeriesLabelPosition::LowerRight, 15)?;
    root.present().map_err(|e| e.to_string())
}

fn calibration_plot(report: &EvalReport, path: &Path) -> Result<(), String> {
    let root = BitMapBackend::new(path, (640, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Calibration, ECE {:.4}", report.summary.ece),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("mean score in bin")
        .y_desc("fraction with pneumonia")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.3)))
        .map_err(|e| e.to_string())?;
    let points: Vec<(f64, f64)> = report
        .calibration
        .iter()
        .filter(|b| b.count > 0)
        .map(|b| (b.mean_score, b.fraction_positive))
        .collect();
    chart
        .draw_series(LineSeries::new(
            points.iter().copied(),
            BLUE.stroke_width(2),
        ))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(points.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

fn histogram_plot(report: &EvalReport, path: &Path) -> Result<(), String> {
    const BINS: usize = 25;
    let mut counts = [[0u32; BINS]; 2];
    for c in &report.cases {
        let b = ((c.score.clamp(0.0, 1.0) * BINS as f32) as usize).min(BINS - 1);
        counts[usize::from(c.pneumonia)][b] += 1;
    }
    let max = counts.iter().flatten().copied().max().unwrap_or(1).max(1);
    let root = BitMapBackend::new(path, (720, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Scores by class", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..1f64, 0u32..max + max / 10 + 1)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("pneumonia score")
        .y_desc("images")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    let width = 1.0 / BINS as f64;
    for (class, colour, name) in [(0usize, GREEN, "NORMAL"), (1, RED, "PNEUMONIA")] {
        chart
            .draw_series((0..BINS).map(|b| {
                let x0 = b as f64 * width;
                Rectangle::new(
                    [
                        (x0 + width * 0.05, 0),
                        (x0 + width * 0.95, counts[class][b]),
                    ],
                    colour.mix(0.45).filled(),
                )
            }))
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 15, y + 5)], colour.mix(0.45).filled())
            });
    }
    let t = f64::from(report.summary.threshold);
    chart
        .draw_series(LineSeries::new([(t, 0), (t, max)], BLACK.stroke_width(2)))
        .map_err(|e| e.to_string())?
        .label(format!("threshold {t:.3}"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    draw_legend(&mut chart, SeriesLabelPosition::UpperMiddle, 15)?;
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::card::EpochTest;

    #[test]
    fn report_and_plots_are_written() {
        let cases: Vec<EvalCase> = (0..40)
            .map(|i| EvalCase {
                path: format!("x{i}.jpeg"),
                pneumonia: i % 2 == 0,
                score: if i % 2 == 0 {
                    0.6 + i as f32 / 200.0
                } else {
                    0.5 - i as f32 / 100.0
                },
                label_source: None,
                ood_distance: None,
            })
            .collect();
        let report = EvalReport::new("m", "00", "data", 0.55, cases, vec![]);
        assert_eq!(report.summary.auc.estimate, 1.0);
        assert!(report.text().contains("ROC AUC      1.0000"));
        // Perfect separation at 0.55: 20 of 20 each way, Wilson interval 83.9% to 100%.
        assert!(
            report
                .text()
                .contains("sensitivity 83.9% to 100.0%, specificity 83.9% to 100.0%"),
            "{}",
            report.text()
        );
        let dir = tempfile::tempdir().unwrap();
        write_plots(&report, dir.path()).unwrap();
        let history: Vec<EpochRecord> = (1..=5)
            .map(|epoch| EpochRecord {
                epoch,
                train_loss: 1.0 / epoch as f64,
                validation_loss: 1.2 / epoch as f64,
                validation_auc: 0.9 + 0.01 * epoch as f64,
                test: (epoch > 1).then(|| EpochTest {
                    loss: 1.5 / epoch as f64,
                    auc: 0.85 + 0.01 * epoch as f64,
                    accuracy: 0.8,
                }),
                ..EpochRecord::default()
            })
            .collect();
        write_training_plot(&history, 5, dir.path()).unwrap();
        for name in [
            "roc.png",
            "calibration.png",
            "histogram.png",
            "training.png",
        ] {
            let img = image::open(dir.path().join(name)).unwrap();
            assert!(img.width() >= 600, "{name}");
            // Not blank: the plot drew something besides the white background.
            let rgb = img.to_rgb8();
            assert!(
                rgb.pixels().any(|p| p.0 != [255, 255, 255]),
                "{name} is blank"
            );
        }
    }
}
