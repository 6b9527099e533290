//! cxr-triage: offline chest X-ray pneumonia triage.
//!
//! - [`io`] finds and decodes studies (JPEG, PNG, DICOM) from a folder.
//! - [`model`] is our CNN (candle): preprocessing, training, evaluation, scoring and Grad-CAM.
//! - [`worklist`] holds studies, scores and decision states, and sorts and filters them.
//! - [`audit`] is the append-only, hash-chained decision store (`SQLite`) and its CSV export.
//! - [`app`] is the review window (eframe). Only this module knows egui.
//! - [`cli`] is the command line; [`install`] finds the shipped model and the demo studies;
//!   [`output`] is where and how any command may write a file.

pub mod app;
pub mod audit;
pub mod cli;
pub mod install;
pub mod io;
pub mod model;
pub mod output;
pub mod worklist;
