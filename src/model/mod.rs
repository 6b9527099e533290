//! Our pneumonia CNN, written with candle: preprocessing, training, evaluation, scoring, Grad-CAM.

pub mod cnn;
pub mod fast;

pub use cnn::{ARCH_ID, CnnConfig, CxrNet};
