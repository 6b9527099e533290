//! Where the installed files are: the shipped model and the demo studies, found beside the
//! executable, in the installed data folder (the Debian package's `/usr/share/cxr-triage`) or in
//! the source tree the binary was built from, in that order. Every command uses this lookup.

use std::path::{Path, PathBuf};

use crate::model::DEFAULT_MODEL;

/// The installed data folder of the Debian package.
pub const INSTALLED_DATA_DIR: &str = "/usr/share/cxr-triage";

/// The demo studies' folder, relative to a data folder.
pub const DEMO_FOLDER: &str = "demo";

/// The folders where installed files are looked for, in order: the executable's folder, the
/// data folder relative to it (`<exe dir>/../share/cxr-triage`), [`INSTALLED_DATA_DIR`], then
/// `source` in the source tree this binary was built from.
fn data_folders(source: &str) -> Vec<PathBuf> {
    let mut places = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        places.push(dir.clone());
        places.push(dir.join("../share/cxr-triage"));
    }
    places.push(PathBuf::from(INSTALLED_DATA_DIR));
    places.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(source));
    places
}

/// The first of `places` that `exists`, or an error that names every place looked in.
fn first_of(places: &[PathBuf], exists: fn(&Path) -> bool, what: &str) -> Result<PathBuf, String> {
    places.iter().find(|p| exists(p)).cloned().ok_or_else(|| {
        let list: Vec<String> = places.iter().map(|p| p.display().to_string()).collect();
        format!("{what} not found; looked in: {}", list.join(", "))
    })
}

/// Where the shipped model's card is looked for, in order (see [`data_folders`]).
pub fn shipped_model_candidates() -> Vec<PathBuf> {
    data_folders("")
        .into_iter()
        .map(|dir| dir.join(DEFAULT_MODEL))
        .collect()
}

/// The shipped model's card: the first of [`shipped_model_candidates`] that exists.
pub fn find_shipped_model() -> Result<PathBuf, String> {
    first_of(
        &shipped_model_candidates(),
        Path::is_file,
        "the shipped model (give one with --weights) was",
    )
}

/// The demo studies that come with cxr-triage: `demo/` in the first data folder that has it,
/// else `assets/demo` of the source tree.
pub fn find_demo_folder() -> Result<PathBuf, String> {
    let places: Vec<PathBuf> = data_folders("assets")
        .into_iter()
        .map(|dir| dir.join(DEMO_FOLDER))
        .collect();
    first_of(&places, Path::is_dir, "the demo studies were")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_tree_is_the_last_place_and_errors_name_every_place() {
        let model = shipped_model_candidates();
        assert_eq!(
            model.last().unwrap(),
            &Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_MODEL)
        );
        assert!(model.contains(&Path::new(INSTALLED_DATA_DIR).join(DEFAULT_MODEL)));
        // From this source tree both are found.
        assert!(find_shipped_model().unwrap().is_file());
        assert!(find_demo_folder().unwrap().join("RG1_J2KI.dcm").is_file());
        let err = first_of(&model[..1], |_| false, "the thing was").unwrap_err();
        assert!(
            err.starts_with("the thing was not found; looked in: "),
            "{err}"
        );
        assert!(err.contains(&model[0].display().to_string()), "{err}");
    }
}
