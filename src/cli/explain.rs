//! `cxr-triage explain STUDY --out FILE.png`: the Grad-CAM heat map over the study.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::io;
use crate::model::gradcam;
use crate::worklist::Label;

/// Arguments of `explain`.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The study (JPEG, PNG or DICOM).
    pub study: PathBuf,
    /// Where to write the PNG (the study's resolution, heat map blended over it).
    #[arg(long)]
    pub out: PathBuf,
    /// Opacity of the heat map, 0 to 1.
    #[arg(long, default_value_t = 0.5)]
    pub opacity: f32,
    /// The model card (weights beside it) [default: the shipped model].
    #[arg(long)]
    pub weights: Option<PathBuf>,
}

/// Runs `explain`.
pub fn run(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    // Never over the study itself, the model, or through a symbolic link; checked before the
    // work.
    let mut protected = crate::output::Protected::new().input(&args.study);
    if let Some(weights) = &args.weights {
        protected = protected
            .input(&weights.with_extension("json"))
            .input(&weights.with_extension("safetensors"));
    }
    protected.check(&args.out)?;
    let classifier = super::load_classifier(args.weights.as_deref())?;
    let study = io::load_study(&args.study)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.study.display()))?;
    let window = study.meta.default_window;
    let explanation = classifier.explain(&study.image, window)?;
    let rgb = gradcam::overlay_rgb(&study.image, window, &explanation.heat, args.opacity);
    let image = image::RgbImage::from_raw(study.image.width, study.image.height, rgb)
        .context("the heat map does not match the study's size")?;
    let mut png = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .context("the heat map could not be encoded as PNG")?;
    crate::output::write_bytes(&args.out, &protected, png.get_ref())?;
    let threshold = classifier.card().threshold;
    println!(
        "score {:.4} ({} at threshold {threshold:.4}, model {})",
        explanation.score,
        Label::from_score(explanation.score, threshold),
        classifier.card().model_id
    );
    println!(
        "wrote {} ({}x{}): Grad-CAM, the regions that raised the score. An explanation, not a \
         localisation of disease.",
        args.out.display(),
        study.image.width,
        study.image.height
    );
    Ok(ExitCode::SUCCESS)
}
