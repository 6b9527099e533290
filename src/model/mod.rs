//! Our pneumonia CNN, written with candle: preprocessing, training, evaluation, scoring, Grad-CAM.

pub mod adapt;
pub mod augment;
pub mod card;
pub mod classifier;
pub mod cnn;
pub mod dataset;
pub mod domain;
pub mod fast;
pub mod gradcam;
pub mod local;
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
