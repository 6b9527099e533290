//! Our pneumonia CNN, written with candle: preprocessing, training, evaluation, scoring, Grad-CAM.

pub mod augment;
pub mod card;
pub mod classifier;
pub mod cnn;
pub mod dataset;
pub mod fast;
pub mod gradcam;
pub mod metrics;
pub mod ood;
pub mod optim;
pub mod preprocess;
pub mod report;
pub mod scoring;
pub mod train;

pub use classifier::{Classifier, ModelError};
pub use cnn::{ARCH_ID, CnnConfig, CxrNet};

/// The shipped model's card, relative to the repository root or to a data folder.
pub const DEFAULT_MODEL: &str = "weights/cxrnet.json";

/// The installed data folder of the Debian package.
pub const INSTALLED_DATA_DIR: &str = "/usr/share/cxr-triage";

/// Where the shipped model is looked for, in order: beside the executable
/// (`<exe dir>/weights/cxrnet.json`), in the installed data folder relative to the executable
/// (`<exe dir>/../share/cxr-triage/…`) and at [`INSTALLED_DATA_DIR`], then in the source tree
/// this binary was built from.
pub fn shipped_model_candidates() -> Vec<std::path::PathBuf> {
    let mut places = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(std::path::Path::to_path_buf))
    {
        places.push(dir.join(DEFAULT_MODEL));
        places.push(dir.join("../share/cxr-triage").join(DEFAULT_MODEL));
    }
    places.push(std::path::Path::new(INSTALLED_DATA_DIR).join(DEFAULT_MODEL));
    places.push(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_MODEL));
    places
}

/// The shipped model's card: the first of [`shipped_model_candidates`] that exists, or an
/// error that names every place looked in.
pub fn find_shipped_model() -> Result<std::path::PathBuf, String> {
    let places = shipped_model_candidates();
    places.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        let list: Vec<String> = places.iter().map(|p| p.display().to_string()).collect();
        format!(
            "the shipped model was not found; looked in: {} (give one with --weights)",
            list.join(", ")
        )
    })
}
