//! The review window (eframe). The only module that knows egui.
