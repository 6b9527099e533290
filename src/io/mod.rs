//! Finding and decoding studies: JPEG, PNG and DICOM, recognised by content.

mod gray;

pub use gray::{GrayImage, Samples, Window};
