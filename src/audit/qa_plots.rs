//! The QA report's plots ([`write_qa_plots`]): agreement (Cohen's kappa with its 95% interval)
//! per reader, of all readers with the AI and between readers; and each reader's agreement with
//! the AI month by month.

use std::path::Path;

use plotters::prelude::*;

use super::qa::{Agreement, QaReport};
use crate::model::report::{PlotError, draw_legend, plot_err, register_font};

/// The colours of the readers' lines, in turn.
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// Writes `kappa.png` (agreement per reader and overall) and `kappa_by_month.png` (each reader
/// with the AI, per month) into `dir`.
pub fn write_qa_plots(report: &QaReport, dir: &Path) -> Result<(), PlotError> {
    register_font();
    kappa_plot(report, &dir.join("kappa.png")).map_err(plot_err("the agreement plot"))?;
    by_month_plot(report, &dir.join("kappa_by_month.png"))
        .map_err(plot_err("the agreement-by-month plot"))?;
    Ok(())
}

/// The lower end of the kappa axis: 0, or lower where an interval goes below it.
fn axis_low<'a>(agreements: impl Iterator<Item = &'a Agreement>) -> f64 {
    agreements
        .map(|a| a.kappa.low)
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::min)
        .max(-1.0)
}

fn kappa_plot(report: &QaReport, path: &Path) -> Result<(), String> {
    let mut rows: Vec<(String, &Agreement)> = report
        .readers
        .iter()
        .map(|r| (format!("{} vs AI", r.reader), &r.with_ai))
        .collect();
    rows.push(("all readers vs AI".to_owned(), &report.all_with_ai));
    rows.push(("reader vs reader".to_owned(), &report.reader_reader));
    let low = axis_low(rows.iter().map(|(_, a)| *a));
    let n = rows.len();
    let root = BitMapBackend::new(path, (900, 120 + 44 * n as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Agreement (Cohen's kappa, 95% interval), {} events",
                report.events
            ),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(260)
        .build_cartesian_2d(low..1.0_f64, -0.5..(n as f64 - 0.5))
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("kappa")
        .y_labels(n)
        .y_label_formatter(&|y| {
            let i = y.round();
            if (y - i).abs() > 0.01 || i < 0.0 {
                return String::new();
            }
            rows.get(n.saturating_sub(1 + i as usize))
                .map(|(name, a)| format!("{name} (n={})", a.pairs))
                .unwrap_or_default()
        })
        .disable_y_mesh()
        .light_line_style(WHITE)
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (_, a)) in rows.iter().enumerate() {
        let y = (n - 1 - i) as f64;
        let k = &a.kappa;
        if !k.estimate.is_finite() {
            continue;
        }
        let colour = if i + 2 >= n { BLACK } else { PALETTE[i % 6] };
        if k.low.is_finite() && k.high.is_finite() {
            chart
                .draw_series(LineSeries::new(
                    [(k.low, y), (k.high, y)],
                    colour.stroke_width(3),
                ))
                .map_err(|e| e.to_string())?;
        }
        chart
            .draw_series([Circle::new((k.estimate, y), 6, colour.filled())])
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

fn by_month_plot(report: &QaReport, path: &Path) -> Result<(), String> {
    let mut months: Vec<&str> = report
        .readers
        .iter()
        .flat_map(|r| r.by_month.keys().map(String::as_str))
        .collect();
    months.sort_unstable();
    months.dedup();
    let low = axis_low(report.readers.iter().flat_map(|r| r.by_month.values()));
    let root = BitMapBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let span = months.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Each reader's agreement with the AI per month (kappa, 95% interval)",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(-0.5..(span - 0.5), low..1.0_f64)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .y_desc("kappa")
        .x_labels(months.len().max(1))
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() > 0.01 || i < 0.0 {
                return String::new();
            }
            months
                .get(i as usize)
                .map(|m| (*m).to_owned())
                .unwrap_or_default()
        })
        .light_line_style(WHITE)
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    for (r, reader) in report.readers.iter().enumerate() {
        let colour = PALETTE[r % 6];
        // Readers side by side within a month, so that their intervals do not hide each other.
        let offset = (r as f64 - (report.readers.len() as f64 - 1.0) / 2.0) * 0.06;
        let points: Vec<(f64, &Agreement)> = months
            .iter()
            .enumerate()
            .filter_map(|(i, m)| reader.by_month.get(*m).map(|a| (i as f64 + offset, a)))
            .filter(|(_, a)| a.kappa.estimate.is_finite())
            .collect();
        for (x, a) in &points {
            if a.kappa.low.is_finite() && a.kappa.high.is_finite() {
                chart
                    .draw_series(LineSeries::new(
                        [(*x, a.kappa.low), (*x, a.kappa.high)],
                        colour.mix(0.6).stroke_width(2),
                    ))
                    .map_err(|e| e.to_string())?;
            }
        }
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|(x, a)| (*x, a.kappa.estimate)),
                colour.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(format!("{} (n={})", reader.reader, reader.with_ai.pairs))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart
            .draw_series(
                points
                    .iter()
                    .map(|(x, a)| Circle::new((*x, a.kappa.estimate), 4, colour.filled())),
            )
            .map_err(|e| e.to_string())?;
    }
    if !report.readers.is_empty() {
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight, 15)?;
    }
    root.present().map_err(|e| e.to_string())
}
