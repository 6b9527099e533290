//! Zoom, pan and display window of an image pane: plain geometry, tested without a window.

use egui::{Pos2, Rect, Vec2};

use super::viewer_worker::ImageInfo;
use crate::io::Window;

/// The largest zoom, relative to "fit".
const MAX_ZOOM: f32 = 64.0;
/// The smallest zoom, relative to "fit".
const MIN_ZOOM: f32 = 0.1;

/// Where an image sits in its pane: a zoom relative to "fit" and the image point (in
/// fractions of its width and height) at the pane's centre. Expressed this way, one transform
/// can be shared by panes that show images of different sizes.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ViewTransform {
    /// 1 shows the whole image as large as the pane allows.
    pub zoom: f32,
    /// The image point at the centre of the pane, 0 to 1 on each axis.
    pub center: [f32; 2],
}

impl Default for ViewTransform {
    fn default() -> Self {
        Self::FIT
    }
}

impl ViewTransform {
    /// The whole image, centred.
    pub const FIT: Self = Self {
        zoom: 1.0,
        center: [0.5, 0.5],
    };

    /// Screen points per image pixel when the image fits the pane.
    pub fn fit_scale(pane: Rect, image_px: Vec2) -> f32 {
        if image_px.x <= 0.0 || image_px.y <= 0.0 {
            return 1.0;
        }
        (pane.width() / image_px.x).min(pane.height() / image_px.y)
    }

    /// Screen points per image pixel.
    pub fn scale(&self, pane: Rect, image_px: Vec2) -> f32 {
        Self::fit_scale(pane, image_px) * self.zoom
    }

    /// Where the whole image is drawn (it may extend past the pane).
    pub fn image_rect(&self, pane: Rect, image_px: Vec2) -> Rect {
        let size = image_px * self.scale(pane, image_px);
        let min = pane.center() - Vec2::new(self.center[0] * size.x, self.center[1] * size.y);
        Rect::from_min_size(min, size)
    }

    /// The image pixel under a screen point.
    pub fn image_from_screen(&self, pane: Rect, image_px: Vec2, screen: Pos2) -> Pos2 {
        let rect = self.image_rect(pane, image_px);
        let scale = self.scale(pane, image_px).max(f32::EPSILON);
        Pos2::new(
            (screen.x - rect.min.x) / scale,
            (screen.y - rect.min.y) / scale,
        )
    }

    /// Moves the image by a screen distance.
    pub fn pan(&mut self, delta: Vec2, pane: Rect, image_px: Vec2) {
        let size = image_px * self.scale(pane, image_px);
        if size.x > 0.0 && size.y > 0.0 {
            self.center[0] = (self.center[0] - delta.x / size.x).clamp(0.0, 1.0);
            self.center[1] = (self.center[1] - delta.y / size.y).clamp(0.0, 1.0);
        }
    }

    /// Zooms by `factor`, keeping the image point under `anchor` (a screen point) in place.
    pub fn zoom_around(&mut self, factor: f32, anchor: Pos2, pane: Rect, image_px: Vec2) {
        let before = self.image_from_screen(pane, image_px, anchor);
        self.zoom = (self.zoom * factor).clamp(MIN_ZOOM, MAX_ZOOM);
        let scale = self.scale(pane, image_px);
        // Choose the centre so that `before` lands on `anchor` again.
        let offset = (anchor - pane.center()) / scale.max(f32::EPSILON);
        if image_px.x > 0.0 && image_px.y > 0.0 {
            self.center = [
                ((before.x - offset.x) / image_px.x).clamp(0.0, 1.0),
                ((before.y - offset.y) / image_px.y).clamp(0.0, 1.0),
            ];
        }
    }

    /// One image pixel per physical screen pixel, keeping the centre.
    pub fn actual_size(&self, pane: Rect, image_px: Vec2, pixels_per_point: f32) -> Self {
        let fit = Self::fit_scale(pane, image_px).max(f32::EPSILON);
        Self {
            zoom: (1.0 / (pixels_per_point * fit)).clamp(MIN_ZOOM, MAX_ZOOM),
            center: self.center,
        }
    }
}

/// The display-window presets, on the number keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WindowPreset {
    /// The file's own window (DICOM) or the nominal range (JPEG, PNG).
    Default,
    /// From the darkest to the brightest pixel.
    FullRange,
    /// The 1st to the 99th percentile of the pixels.
    Auto,
    /// The middle 60% of the automatic window: more contrast in the lungs.
    HighContrast,
}

impl WindowPreset {
    /// Every preset, in key order (1 to 4).
    pub const ALL: [Self; 4] = [
        Self::Default,
        Self::FullRange,
        Self::Auto,
        Self::HighContrast,
    ];

    /// The preset's name.
    pub fn label(self) -> &'static str {
        match self {
            Self::Default => "Default",
            Self::FullRange => "Full range",
            Self::Auto => "Auto",
            Self::HighContrast => "High contrast",
        }
    }

    /// The window for a study (`None`: the study's default window).
    pub fn window(self, info: &ImageInfo) -> Option<Window> {
        match self {
            Self::Default => None,
            Self::FullRange => Some(info.full_range),
            Self::Auto => Some(info.auto_window),
            Self::HighContrast => Some(Window {
                center: info.auto_window.center,
                width: info.auto_window.width * 0.6,
            }),
        }
    }
}

/// The window after a right-drag of `delta` screen points: right widens, down raises the level
/// (darker image). One point moves by 1/400 of the study's full range.
pub(crate) fn window_dragged(window: Window, delta: Vec2, info: &ImageInfo) -> Window {
    let range = info.full_range.width.max(1.0);
    let step = range / 400.0;
    let min_width = if info.real_valued {
        range / 10_000.0
    } else {
        1.0
    };
    Window {
        center: window.center + f64::from(delta.y) * step,
        width: (window.width + f64::from(delta.x) * step).max(min_width),
    }
}

/// Carries a window from one study to another relative to their default windows, so that a
/// linked comparison pane brightens and narrows as the main pane does.
pub(crate) fn carry_window(window: Window, from: Window, to: Window) -> Window {
    let from_width = from.width.max(f64::EPSILON);
    Window {
        center: to.center + (window.center - from.center) / from_width * to.width,
        width: window.width / from_width * to.width,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pane() -> Rect {
        Rect::from_min_size(Pos2::new(100.0, 50.0), Vec2::new(400.0, 300.0))
    }

    #[test]
    fn fit_centres_the_whole_image() {
        let t = ViewTransform::FIT;
        let img = Vec2::new(800.0, 400.0);
        let r = t.image_rect(pane(), img);
        assert_eq!(r.width(), 400.0);
        assert_eq!(r.height(), 200.0);
        assert_eq!(r.center(), pane().center());
    }

    #[test]
    fn zoom_keeps_the_point_under_the_pointer() {
        let img = Vec2::new(800.0, 400.0);
        let mut t = ViewTransform::FIT;
        let anchor = Pos2::new(180.0, 170.0);
        let before = t.image_from_screen(pane(), img, anchor);
        t.zoom_around(3.0, anchor, pane(), img);
        let after = t.image_from_screen(pane(), img, anchor);
        assert!((before - after).length() < 1e-3, "{before:?} {after:?}");
        assert_eq!(t.zoom, 3.0);
    }

    #[test]
    fn pan_moves_the_image_with_the_pointer() {
        let img = Vec2::new(800.0, 400.0);
        let mut t = ViewTransform {
            zoom: 2.0,
            center: [0.5, 0.5],
        };
        let before = t.image_rect(pane(), img).min;
        t.pan(Vec2::new(20.0, -10.0), pane(), img);
        let after = t.image_rect(pane(), img).min;
        assert!((after - before - Vec2::new(20.0, -10.0)).length() < 1e-3);
    }

    #[test]
    fn actual_size_shows_one_image_pixel_per_screen_pixel() {
        let img = Vec2::new(800.0, 400.0);
        let t = ViewTransform::FIT.actual_size(pane(), img, 2.0);
        assert!((t.scale(pane(), img) * 2.0 - 1.0).abs() < 1e-6);
    }

    #[test]
    fn windows_drag_and_carry_between_studies() {
        let info = ImageInfo {
            width: 1,
            height: 1,
            default_window: Window::from_range(0.0, 255.0),
            default_note: None,
            full_range: Window::from_range(0.0, 400.0),
            auto_window: Window::from_range(10.0, 200.0),
            real_valued: false,
            description: String::new(),
        };
        let w = window_dragged(info.default_window, Vec2::new(40.0, -400.0), &info);
        assert!((w.width - 295.0).abs() < 1e-9);
        assert!((w.center - (127.5 - 400.0)).abs() < 1e-9);
        let narrow = window_dragged(info.default_window, Vec2::new(-1e6, 0.0), &info);
        assert_eq!(narrow.width, 1.0);

        // Half the default width, a quarter-width brighter, carried to a 12-bit study.
        let from = Window::from_range(0.0, 256.0);
        let to = Window::from_range(0.0, 4096.0);
        let carried = carry_window(
            Window {
                center: 64.0,
                width: 128.0,
            },
            from,
            to,
        );
        assert_eq!(carried.width, 2048.0);
        assert_eq!(carried.center, 1024.0);
        assert_eq!(
            WindowPreset::HighContrast.window(&info).unwrap().width,
            190.0 * 0.6
        );
        assert_eq!(WindowPreset::Default.window(&info), None);
    }
}
