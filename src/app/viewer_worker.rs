//! The "viewer" thread: decodes studies at full resolution, turns them into textures through a
//! display window, and computes Grad-CAM heat maps, so that the window never decodes or runs
//! the model itself.
//!
//! The window sends the whole list of what it wants shown (most important first) whenever that
//! list changes; the thread works through the newest list only, one item at a time, and skips
//! what it has already delivered and the window still holds. The window keeps one image texture
//! per study (the last delivered), so delivering a study through a new (window, invert) forgets
//! every earlier delivery of that study: going back to an earlier window or invert state renders
//! it again. Decoded studies are kept in a small LRU cache.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use egui::{ColorImage, TextureHandle, TextureOptions};

use crate::io::{self, GrayImage, Samples, Study, Window};
use crate::model::Classifier;
use crate::model::gradcam::{overlay_alpha, turbo};
use crate::worklist::StudyId;

/// Why a study whose file changed on disk is not shown.
pub(crate) const CHANGED: &str = "the file changed on disk after it was scored: it is not the \
     study that was scored and registered, so it is not shown and cannot be decided; reopen the \
     folder to score it again";

/// Decoded studies kept for re-windowing (about 6 MB each for a 3-megapixel film).
const DECODED_CAPACITY: usize = 4;

/// Deliveries remembered, to skip repeated wants.
const DELIVERED_CAPACITY: usize = 64;

/// The longest side of the heat map texture, in texels (the map is smooth; bilinear filtering
/// does the rest).
const HEAT_TEXTURE_SIDE: usize = 256;

/// Mip levels stop once the longest side is at or below this many pixels.
const SMALLEST_LEVEL_SIDE: usize = 768;

/// A study of one opened folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ImageKey {
    /// The folder's job generation.
    pub generation: u64,
    /// The study.
    pub id: StudyId,
}

/// One thing the window wants.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Want {
    /// The study as a texture through `window` (`None`: the study's default window).
    Image {
        /// The study.
        key: ImageKey,
        /// Its file.
        path: PathBuf,
        /// The display window.
        window: Option<Window>,
        /// Black and white swapped.
        invert: bool,
        /// The SHA-256 of the file as it was scored (its identity in the decision store): the
        /// image is shown only if the bytes read now have this hash.
        sha256: Option<String>,
    },
    /// The study's Grad-CAM heat map.
    Heat {
        /// The study.
        key: ImageKey,
        /// Its file.
        path: PathBuf,
    },
}

impl Want {
    fn key(&self) -> ImageKey {
        match self {
            Self::Image { key, .. } | Self::Heat { key, .. } => *key,
        }
    }

    /// What identifies a delivery (the path aside).
    fn delivery(&self) -> Delivery {
        match self {
            Self::Image {
                key,
                window,
                invert,
                ..
            } => Delivery::Image(
                *key,
                window.map(|w| (w.center.to_bits(), w.width.to_bits())),
                *invert,
            ),
            Self::Heat { key, .. } => Delivery::Heat(*key),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Delivery {
    Image(ImageKey, Option<(u64, u64)>, bool),
    Heat(ImageKey),
}

impl Delivery {
    fn key(self) -> ImageKey {
        match self {
            Self::Image(k, ..) | Self::Heat(k) => k,
        }
    }
}

/// The window's list of wants.
#[derive(Clone, Debug, Default)]
pub(crate) struct ViewerRequest {
    /// Most important first.
    pub wants: Vec<Want>,
    /// Studies whose textures the window dropped: deliver them again when wanted.
    pub forgotten: Vec<ImageKey>,
    /// The model, for heat maps.
    pub classifier: Option<Arc<Classifier>>,
    /// The largest texture side the renderer accepts.
    pub max_texture_side: usize,
}

/// What is known of a decoded study, for display.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ImageInfo {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The window the study is shown with first: the file's (see [`crate::io::StudyMeta`]),
    /// unless that is a DICOM window more than twice as wide as the bulk of the image's values
    /// (5th to 95th percentile), which shows the film washed out; the automatic window then.
    pub default_window: Window,
    /// Why the default window is not the file's, when it is not.
    pub default_note: Option<String>,
    /// From the smallest to the largest sample.
    pub full_range: Window,
    /// From the 1st to the 99th percentile of the samples.
    pub auto_window: Window,
    /// Whether samples are real numbers (a window can then be narrower than one unit).
    pub real_valued: bool,
    /// "JPEG 8-bit MONOCHROME2" and the like.
    pub description: String,
}

/// A study's textures: level 0 at full resolution (unless above the renderer's limit), then
/// halved sizes for display at small scale.
#[derive(Clone)]
pub(crate) struct Textures {
    /// Finest first.
    pub levels: Vec<TextureHandle>,
    /// FNV-1a hash of the full-resolution display bytes (after window and invert): which
    /// picture the textures show.
    pub digest: u64,
    /// Mean of the full-resolution display bytes, 0 to 255.
    pub mean: f64,
}

/// What the thread delivers.
pub(crate) enum ViewerMsg {
    /// A study's textures through a window.
    Image {
        /// The study.
        key: ImageKey,
        /// What is known of it.
        info: Arc<ImageInfo>,
        /// The window asked for (`None`: default).
        window: Option<Window>,
        /// Whether black and white are swapped.
        invert: bool,
        /// The textures.
        textures: Textures,
    },
    /// A study that cannot be shown.
    ImageFailed {
        /// The study.
        key: ImageKey,
        /// Why, in words.
        error: String,
        /// Whether the file's bytes no longer have the hash it was scored and registered with.
        changed: bool,
    },
    /// A study's heat map, as a texture whose alpha is the weight of each region.
    Heat {
        /// The study.
        key: ImageKey,
        /// The texture.
        texture: TextureHandle,
    },
    /// A heat map that could not be computed.
    HeatFailed {
        /// The study.
        key: ImageKey,
        /// Why, in words.
        error: String,
    },
}

/// The window's end of the viewer thread.
pub(crate) struct ViewerHandle {
    requests: SyncSender<ViewerRequest>,
    /// Deliveries.
    pub messages: Receiver<ViewerMsg>,
}

impl ViewerHandle {
    /// Starts the thread.
    pub fn spawn(ctx: egui::Context) -> std::io::Result<Self> {
        let (req_tx, req_rx) = sync_channel::<ViewerRequest>(8);
        let (msg_tx, msg_rx) = sync_channel::<ViewerMsg>(16);
        std::thread::Builder::new()
            .name("viewer".to_owned())
            .spawn(move || Worker::new(ctx, msg_tx).run(&req_rx))?;
        Ok(Self {
            requests: req_tx,
            messages: msg_rx,
        })
    }

    /// Sends a request; `false` when the queue is full (try again next frame).
    pub fn request(&self, request: ViewerRequest) -> bool {
        match self.requests.try_send(request) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => true,
            Err(TrySendError::Full(_)) => false,
        }
    }
}

/// A decoded study with its display information, or why it cannot be decoded.
type Decoded = Arc<Result<(Study, Arc<ImageInfo>), String>>;

struct Worker {
    ctx: egui::Context,
    tx: SyncSender<ViewerMsg>,
    decoded: VecDeque<(ImageKey, Decoded)>,
    delivered: VecDeque<Delivery>,
}

impl Worker {
    fn new(ctx: egui::Context, tx: SyncSender<ViewerMsg>) -> Self {
        Self {
            ctx,
            tx,
            decoded: VecDeque::new(),
            delivered: VecDeque::new(),
        }
    }

    fn run(mut self, requests: &Receiver<ViewerRequest>) {
        let mut next: Option<ViewerRequest> = None;
        loop {
            let mut request = match next.take() {
                Some(r) => r,
                None => match requests.recv() {
                    Ok(r) => r,
                    Err(_) => return,
                },
            };
            while let Ok(newer) = requests.try_recv() {
                self.forget(&request.forgotten);
                request = newer;
            }
            self.forget(&request.forgotten);
            for want in &request.wants {
                if let Ok(newer) = requests.try_recv() {
                    next = Some(newer);
                    break;
                }
                let delivery = want.delivery();
                if self.delivered.contains(&delivery) {
                    continue;
                }
                let msg = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.serve(want, &request)
                }))
                .unwrap_or_else(|_| {
                    let error = "the viewer failed unexpectedly on this study".to_owned();
                    match want {
                        Want::Image { .. } => ViewerMsg::ImageFailed {
                            key: want.key(),
                            error,
                            changed: false,
                        },
                        Want::Heat { .. } => ViewerMsg::HeatFailed {
                            key: want.key(),
                            error,
                        },
                    }
                });
                if self.tx.send(msg).is_err() {
                    return;
                }
                self.ctx.request_repaint();
                // The window replaces the study's texture: earlier deliveries are gone there.
                if let Delivery::Image(key, ..) = delivery {
                    self.delivered
                        .retain(|d| !matches!(d, Delivery::Image(k, ..) if *k == key));
                }
                self.delivered.push_back(delivery);
                if self.delivered.len() > DELIVERED_CAPACITY {
                    self.delivered.pop_front();
                }
            }
        }
    }

    fn forget(&mut self, keys: &[ImageKey]) {
        self.delivered.retain(|d| !keys.contains(&d.key()));
    }

    fn serve(&mut self, want: &Want, request: &ViewerRequest) -> ViewerMsg {
        let key = want.key();
        match want {
            Want::Image {
                path,
                window,
                invert,
                sha256,
                ..
            } => {
                let decoded = self.decode(key, path);
                match decoded.as_ref() {
                    // The bytes decoded are hashed as they are read: a file replaced since it
                    // was scored is never shown as if it were the scored study.
                    Ok((study, _)) if sha256.as_ref().is_some_and(|h| *h != study.meta.sha256) => {
                        ViewerMsg::ImageFailed {
                            key,
                            error: CHANGED.to_owned(),
                            changed: true,
                        }
                    }
                    Ok((study, info)) => {
                        let shown = window.unwrap_or(info.default_window);
                        let textures = self.textures(
                            key,
                            &study.image,
                            shown,
                            *invert,
                            request.max_texture_side,
                        );
                        ViewerMsg::Image {
                            key,
                            info: Arc::clone(info),
                            window: *window,
                            invert: *invert,
                            textures,
                        }
                    }
                    Err(error) => ViewerMsg::ImageFailed {
                        key,
                        error: error.clone(),
                        changed: false,
                    },
                }
            }
            Want::Heat { path, .. } => match request.classifier.as_deref() {
                None => ViewerMsg::HeatFailed {
                    key,
                    error: "no model is loaded".to_owned(),
                },
                Some(classifier) => match self.heat(key, path, classifier) {
                    Ok(texture) => ViewerMsg::Heat { key, texture },
                    Err(error) => ViewerMsg::HeatFailed { key, error },
                },
            },
        }
    }

    fn decode(&mut self, key: ImageKey, path: &std::path::Path) -> Decoded {
        if let Some(pos) = self.decoded.iter().position(|(k, _)| *k == key) {
            let entry = self.decoded.remove(pos);
            if let Some(entry) = entry {
                let value = Arc::clone(&entry.1);
                self.decoded.push_back(entry);
                return value;
            }
        }
        let value = Arc::new(
            io::load_study(path)
                .map(|study| {
                    let info = Arc::new(image_info(&study));
                    (study, info)
                })
                .map_err(|e| e.to_string()),
        );
        self.decoded.push_back((key, Arc::clone(&value)));
        while self.decoded.len() > DECODED_CAPACITY {
            self.decoded.pop_front();
        }
        value
    }

    fn textures(
        &self,
        key: ImageKey,
        image: &GrayImage,
        window: Window,
        invert: bool,
        max_texture_side: usize,
    ) -> Textures {
        let mut bytes = image.to_display_u8(window);
        if invert {
            for b in &mut bytes {
                *b = 255 - *b;
            }
        }
        let digest = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        let mean = if bytes.is_empty() {
            0.0
        } else {
            bytes.iter().map(|&b| f64::from(b)).sum::<f64>() / bytes.len() as f64
        };
        let mut levels = Vec::new();
        let mut size = [image.width as usize, image.height as usize];
        let mut level = 0;
        loop {
            if size[0].max(size[1]) <= max_texture_side.max(1) {
                levels.push(self.ctx.load_texture(
                    format!("study-{}-{}-level-{level}", key.generation, key.id.0),
                    ColorImage::from_gray(size, &bytes),
                    TextureOptions::LINEAR,
                ));
            }
            if size[0].max(size[1]) <= SMALLEST_LEVEL_SIDE || size[0] < 2 || size[1] < 2 {
                break;
            }
            (bytes, size) = halve(&bytes, size);
            level += 1;
        }
        Textures {
            levels,
            digest,
            mean,
        }
    }

    fn heat(
        &self,
        key: ImageKey,
        path: &std::path::Path,
        classifier: &Classifier,
    ) -> Result<TextureHandle, String> {
        // The same reduced decode the scorer used, so the map explains the score shown.
        let min_side = u32::try_from(classifier.input_size()).unwrap_or(u32::MAX);
        let study = io::load_study_for_model(path, min_side).map_err(|e| e.to_string())?;
        let explanation = classifier
            .explain(&study.image, study.meta.default_window)
            .map_err(|e| format!("the heat map could not be computed: {e}"))?;
        let (w, h) = fit_within(
            study.meta.width as usize,
            study.meta.height as usize,
            HEAT_TEXTURE_SIDE,
        );
        let heat = explanation.heat.resized(w, h);
        let rgba: Vec<u8> = heat
            .values
            .iter()
            .flat_map(|&v| {
                let [r, g, b] = turbo(v);
                // The same weighting as `gradcam::overlay_rgb`, before the user's opacity.
                let alpha = (overlay_alpha(v) * 255.0).round() as u8;
                [r, g, b, alpha]
            })
            .collect();
        Ok(self.ctx.load_texture(
            format!("heat-{}-{}", key.generation, key.id.0),
            ColorImage::from_rgba_unmultiplied([w, h], &rgba),
            TextureOptions::LINEAR,
        ))
    }
}

/// Halves an 8-bit image, averaging 2x2 blocks (the odd last row or column is dropped).
fn halve(bytes: &[u8], [w, h]: [usize; 2]) -> (Vec<u8>, [usize; 2]) {
    let (nw, nh) = (w / 2, h / 2);
    let mut out = Vec::with_capacity(nw * nh);
    for y in 0..nh {
        let r0 = &bytes[2 * y * w..2 * y * w + w];
        let r1 = &bytes[(2 * y + 1) * w..(2 * y + 1) * w + w];
        for x in 0..nw {
            let sum = u16::from(r0[2 * x])
                + u16::from(r0[2 * x + 1])
                + u16::from(r1[2 * x])
                + u16::from(r1[2 * x + 1]);
            out.push(((sum + 2) / 4) as u8);
        }
    }
    (out, [nw, nh])
}

/// The size of `w`x`h` scaled to fit a `side` square, keeping the aspect ratio (at least 1).
fn fit_within(w: usize, h: usize, side: usize) -> (usize, usize) {
    let longest = w.max(h).max(1);
    if longest <= side {
        return (w.max(1), h.max(1));
    }
    let scale = side as f64 / longest as f64;
    (
        ((w as f64 * scale).round() as usize).max(1),
        ((h as f64 * scale).round() as usize).max(1),
    )
}

/// Window presets and a description of a decoded study.
fn image_info(study: &Study) -> ImageInfo {
    let image = &study.image;
    let meta = &study.meta;
    let (low, high) = percentiles(image, 0.01, 0.99);
    let full_range = image.full_range_window();
    let auto_window = if high > low {
        Window::from_range(low, high)
    } else {
        full_range
    };
    let mut description = format!(
        "{} {}-bit {}",
        meta.format, meta.bits_stored, meta.photometric
    );
    if let Some(d) = &meta.dicom {
        for part in [&d.modality, &d.view_position, &d.body_part_examined]
            .into_iter()
            .flatten()
        {
            description.push(' ');
            description.push_str(part);
        }
    }
    // A file's window more than twice as wide as the bulk of the image's values (5th to 95th
    // percentile) leaves most grey levels unused: the film looks washed out (RG1_J2KI.dcm of
    // the demo: W 30000 over a bulk spanning about 12,900).
    let file = meta.default_window;
    let (bulk_low, bulk_high) = percentiles(image, 0.05, 0.95);
    let too_wide = meta.format == crate::io::SourceFormat::Dicom
        && high > low
        && bulk_high > bulk_low
        && file.width > 2.0 * (bulk_high - bulk_low);
    let (default_window, default_note) = if too_wide {
        (
            auto_window,
            Some(format!(
                "auto (the file's W {:.0} L {:.0} washes it out)",
                file.width, file.center
            )),
        )
    } else {
        (file, None)
    };
    ImageInfo {
        width: image.width,
        height: image.height,
        default_window,
        default_note,
        full_range,
        auto_window,
        real_valued: matches!(image.samples, Samples::F32(_)),
        description,
    }
}

/// The sample values below which fractions `lo` and `hi` of the pixels lie.
fn percentiles(image: &GrayImage, lo: f64, hi: f64) -> (f64, f64) {
    match &image.samples {
        Samples::U16(v) => {
            if v.is_empty() {
                return (0.0, 0.0);
            }
            let mut hist = vec![0u32; 65536];
            for &x in v {
                hist[usize::from(x)] += 1;
            }
            let n = v.len() as f64;
            let at = |fraction: f64| {
                let target = (fraction * n).ceil().max(1.0);
                let mut seen = 0.0;
                for (value, &count) in hist.iter().enumerate() {
                    seen += f64::from(count);
                    if seen >= target {
                        return value as f64;
                    }
                }
                65535.0
            };
            (at(lo), at(hi))
        }
        Samples::F32(v) => {
            // Every k-th sample is plenty for a display window.
            let step = (v.len() / 200_000).max(1);
            let mut sample: Vec<f32> = v
                .iter()
                .step_by(step)
                .copied()
                .filter(|x| x.is_finite())
                .collect();
            if sample.is_empty() {
                return (0.0, 0.0);
            }
            sample.sort_by(f32::total_cmp);
            let at = |fraction: f64| {
                let i = ((fraction * sample.len() as f64) as usize).min(sample.len() - 1);
                f64::from(sample[i])
            };
            (at(lo), at(hi))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_file_window_far_wider_than_the_film_gives_way_to_the_automatic_window() {
        let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo");
        // RG1_J2KI.dcm: W 30000 L 15000 (MONOCHROME1) over values that span about 13,000.
        let rg1 = crate::io::load_study(&demo.join("RG1_J2KI.dcm")).unwrap();
        let info = image_info(&rg1);
        assert_eq!(info.default_window, info.auto_window);
        assert_ne!(info.default_window, rg1.meta.default_window);
        assert!(info.default_note.unwrap().contains("W 30000 L 17767"));
        // A file window that fits the film is kept (here 1.2 times the automatic one).
        let mut fitting = rg1.clone();
        fitting.meta.default_window = Window {
            center: info.auto_window.center,
            width: info.auto_window.width * 1.2,
        };
        let kept = image_info(&fitting);
        assert_eq!(
            (kept.default_window, kept.default_note),
            (fitting.meta.default_window, None)
        );
        // A JPEG keeps its nominal range, whatever its contrast.
        let jpeg = crate::io::load_study(&demo.join("IM-0001-0001.jpeg")).unwrap();
        assert_eq!(image_info(&jpeg).default_window, jpeg.meta.default_window);
    }

    #[test]
    fn halving_averages_blocks_and_drops_the_odd_edge() {
        let bytes = [0, 255, 10, 0, 255, 10, 100, 100, 7];
        let (out, size) = halve(&bytes, [3, 3]);
        assert_eq!(size, [1, 1]);
        assert_eq!(out, [128]);
    }

    #[test]
    fn heat_texture_keeps_the_aspect_ratio() {
        assert_eq!(fit_within(2000, 1000, 256), (256, 128));
        assert_eq!(fit_within(100, 50, 256), (100, 50));
        assert_eq!(fit_within(0, 0, 256), (1, 1));
    }

    #[test]
    fn percentiles_ignore_the_extreme_pixels() {
        let mut px = vec![100u16; 1000];
        px[0] = 0;
        px[999] = 4000;
        let img = GrayImage {
            width: 1000,
            height: 1,
            bits_stored: 12,
            samples: Samples::U16(px.clone()),
        };
        assert_eq!(percentiles(&img, 0.01, 0.99), (100.0, 100.0));
        let img = GrayImage {
            samples: Samples::F32(px.iter().map(|&x| f32::from(x)).collect()),
            ..img
        };
        assert_eq!(percentiles(&img, 0.01, 0.99), (100.0, 100.0));
    }
}
