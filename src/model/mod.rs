//! Our pneumonia CNN, written with candle: preprocessing, training, evaluation, scoring, Grad-CAM.

pub mod cnn;

pub use cnn::{ARCH_ID, CnnConfig, CxrNet};
