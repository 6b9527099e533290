//! `--screenshot`: waits until everything is on screen, saves a PNG of the window and closes
//! it; and the timings printed on exit.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{App, ModelState, RightPane};
use crate::worklist::Worklist;

/// The state of a screenshot requested with [`AppConfig::screenshot`].
pub(super) struct ScreenshotState {
    pub(super) out: PathBuf,
    pub(super) ready_frames: u32,
    pub(super) requested: bool,
    pub(super) started: Instant,
    pub(super) result: Arc<Mutex<Option<Result<(), String>>>>,
}

impl App {
    /// Takes the screenshot once everything is on screen, then closes the window.
    pub(super) fn screenshot_logic(&mut self, ctx: &egui::Context) {
        let ready = self.screenshot_ready();
        let Some(shot) = &mut self.screenshot else {
            return;
        };
        let result = shot.result.lock().map(|mut r| r.take()).unwrap_or(None);
        if let Some(result) = result {
            match result {
                Ok(()) => eprintln!("screenshot saved: {}", shot.out.display()),
                Err(e) => eprintln!("error: the screenshot could not be saved: {e}"),
            }
            self.print_stats();
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            return;
        }
        if shot.requested {
            return;
        }
        if shot.started.elapsed().as_secs() > 600 {
            eprintln!("error: the studies were not all scored within 10 minutes; no screenshot");
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            return;
        }
        shot.ready_frames = if ready { shot.ready_frames + 1 } else { 0 };
        // A few settled frames, so that layout and fonts have converged.
        if shot.ready_frames >= 5 {
            shot.requested = true;
            let out = shot.out.clone();
            let result = Arc::clone(&shot.result);
            let waker = ctx.clone();
            ctx.request_screenshot(move |image| {
                let saved = save_png(&out, &image);
                if let Ok(mut slot) = result.lock() {
                    *slot = Some(saved);
                }
                waker.request_repaint();
            });
        }
        ctx.request_repaint();
    }

    /// Whether the folder is scored and the selected study and its heat map are on screen.
    pub(super) fn screenshot_ready(&self) -> bool {
        if matches!(self.model, ModelState::Loading) {
            return false;
        }
        let Some(s) = &self.session else {
            return self.config.folder.is_none();
        };
        if s.is_scoring() {
            return false;
        }
        let Some(sel) = s.selected else {
            return s.worklist.is_empty() || s.order.view.is_empty();
        };
        let key = s.key(sel);
        let image_done = self.cache.image(key).is_some();
        let heat_needed = self.right_pane == RightPane::Explanation
            && self.classifier().is_some()
            && s.worklist
                .row(sel)
                .is_some_and(|r| r.score_value().is_some());
        image_done && (!heat_needed || self.cache.heat(key).is_some())
    }

    /// Prints frame times, timings and peak memory to stderr.
    pub(super) fn print_stats(&self) {
        let (first_rows, finished) = self.timings_secs();
        let studies = self.worklist().map_or(0, Worklist::len);
        eprintln!("studies: {studies}");
        if let Some(t) = first_rows {
            eprintln!("first rows after: {:.0} ms", t * 1000.0);
        }
        if let Some(t) = self.first_score_secs() {
            eprintln!("first score after: {:.0} ms", t * 1000.0);
        }
        if let Some(t) = finished {
            eprintln!("all scored after: {t:.1} s");
        }
        eprintln!("frame times while scoring: {}", self.stats.while_scoring());
        eprintln!(
            "  of which the app's logic and drawing: {}",
            self.stats.app_while_scoring()
        );
        eprintln!("frame times otherwise: {}", self.stats.idle());
        if let Some(kib) = peak_rss_kib() {
            eprintln!("peak memory (VmHWM): {:.0} MiB", kib as f64 / 1024.0);
        }
    }
}

/// Writes the window's pixels as a PNG.
pub(super) fn save_png(path: &Path, image: &egui::ColorImage) -> Result<(), String> {
    let [w, h] = image.size;
    let rgba: Vec<u8> = image
        .pixels
        .iter()
        .flat_map(egui::Color32::to_srgba_unmultiplied)
        .collect();
    let (Ok(w), Ok(h)) = (u32::try_from(w), u32::try_from(h)) else {
        return Err("the window is too large".to_owned());
    };
    image::save_buffer(path, &rgba, w, h, image::ExtendedColorType::Rgba8)
        .map_err(|e| e.to_string())
}

/// The process's peak resident memory, in KiB (Linux).
pub(super) fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
