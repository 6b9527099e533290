//! Labelled image folders (`NORMAL/`, `PNEUMONIA/`), patient ids, and the patient-level split.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::SeedableRng as _;
use rand::seq::SliceRandom as _;

use crate::worklist::Label;

/// One labelled image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Where the image is.
    pub path: PathBuf,
    /// Its label, from the folder it is in.
    pub label: Label,
    /// The patient it belongs to, from its file name.
    pub patient: String,
}

/// Reading a labelled folder failed.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The folder or one of its class folders cannot be listed.
    #[error("cannot read the folder {path}: {source}")]
    Read {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A class folder is missing or empty.
    #[error("{path} must hold NORMAL/ and PNEUMONIA/ folders with images in both")]
    MissingClass {
        /// The folder.
        path: PathBuf,
    },
}

/// Decodes one labelled image, through the same loading layer as every study, with its default
/// display window.
pub fn load_image(path: &Path) -> Result<(crate::io::GrayImage, crate::io::Window), String> {
    let study = crate::io::load_study(path).map_err(|e| e.to_string())?;
    Ok((study.image, study.meta.default_window))
}

/// The patient id in a Kermany file name: `person<P>_bacteria_<N>` and `person<P>_virus_<N>` give
/// `person<P>`; `IM-<P>-<N>` gives `IM-<P>`; `NORMAL2-IM-<P>-<N>` gives `NORMAL2-IM-<P>`. Any other
/// name is its own patient (its stem).
pub fn patient_id(file_name: &str) -> String {
    let stem = file_name.split('.').next().unwrap_or(file_name);
    if let Some(rest) = stem.strip_prefix("person")
        && let Some((p, _)) = rest.split_once('_')
    {
        return format!("person{p}");
    }
    let parts: Vec<&str> = stem.split('-').collect();
    if let Some(i) = parts.iter().position(|&p| p == "IM")
        && i + 2 < parts.len()
    {
        return parts[..=i + 1].join("-");
    }
    stem.to_owned()
}

/// Lists `dir/NORMAL/*` and `dir/PNEUMONIA/*` (any case, non-hidden files), sorted by path.
pub fn list_labelled(dir: &Path) -> Result<Vec<Sample>, DatasetError> {
    let read = |path: &Path| {
        std::fs::read_dir(path).map_err(|source| DatasetError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let mut samples = Vec::new();
    for entry in read(dir)? {
        let entry = entry.map_err(|source| DatasetError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let Some(label) = Label::from_folder_name(&entry.file_name().to_string_lossy()) else {
            continue;
        };
        if !entry.path().is_dir() {
            continue;
        }
        for file in read(&entry.path())? {
            let file = file.map_err(|source| DatasetError::Read {
                path: entry.path(),
                source,
            })?;
            let name = file.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !file.path().is_file() {
                continue;
            }
            samples.push(Sample {
                path: file.path(),
                label,
                patient: patient_id(&name),
            });
        }
    }
    samples.sort_by(|a, b| a.path.cmp(&b.path));
    for label in Label::ALL {
        if !samples.iter().any(|s| s.label == label) {
            return Err(DatasetError::MissingClass {
                path: dir.to_owned(),
            });
        }
    }
    Ok(samples)
}

/// Applies corrected labels (for example `cxr-triage export` of reviewed cases) to `samples`:
/// a listed image takes the file's label, and listed images that are not among the samples are
/// added. Returns how many labels changed and how many images were added.
pub fn apply_corrections(
    samples: &mut Vec<Sample>,
    corrections: &crate::worklist::LabelFile,
) -> (usize, usize) {
    let mut changed = 0;
    let mut added = 0;
    let mut by_path: std::collections::HashMap<PathBuf, usize> = samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                std::path::absolute(&s.path).unwrap_or_else(|_| s.path.clone()),
                i,
            )
        })
        .collect();
    for (path, label) in corrections.entries() {
        if let Some(&i) = by_path.get(path) {
            if samples[i].label != label {
                samples[i].label = label;
                changed += 1;
            }
        } else if path.is_file() {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            by_path.insert(path.to_owned(), samples.len());
            samples.push(Sample {
                path: path.to_owned(),
                label,
                patient: patient_id(&name),
            });
            added += 1;
        }
    }
    samples.sort_by(|a, b| a.path.cmp(&b.path));
    (changed, added)
}

/// Splits samples into (train, validation) indices by patient, stratified by class: within each
/// class the patients are shuffled with `seed` and taken into validation until it holds about
/// `val_fraction` of that class's images. All images of a patient land on the same side.
pub fn split_by_patient(
    samples: &[Sample],
    val_fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut val = Vec::new();
    let mut train = Vec::new();
    for label in Label::ALL {
        // Patient -> image indices, in a deterministic (sorted) order before shuffling.
        let mut by_patient: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, s) in samples.iter().enumerate() {
            if s.label == label {
                by_patient.entry(&s.patient).or_default().push(i);
            }
        }
        let class_total: usize = by_patient.values().map(Vec::len).sum();
        let target = (class_total as f64 * val_fraction).round() as usize;
        let mut patients: Vec<Vec<usize>> = by_patient.into_values().collect();
        patients.shuffle(&mut rng);
        let mut taken = 0;
        for images in patients {
            if taken < target {
                taken += images.len();
                val.extend(images);
            } else {
                train.extend(images);
            }
        }
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn patient_ids_follow_kermany_names() {
        assert_eq!(patient_id("person1_bacteria_1.jpeg"), "person1");
        assert_eq!(patient_id("person1947_bacteria_4876.jpeg"), "person1947");
        assert_eq!(patient_id("person22_virus_55.jpeg"), "person22");
        assert_eq!(patient_id("IM-0115-0001.jpeg"), "IM-0115");
        assert_eq!(patient_id("NORMAL2-IM-1427-0001.jpeg"), "NORMAL2-IM-1427");
        assert_eq!(patient_id("scan.png"), "scan");
    }

    fn synthetic() -> Vec<Sample> {
        // 60 pneumonia patients with 1-4 images, 20 normal patients with 1-3 images.
        let mut v = Vec::new();
        for p in 0..60 {
            for n in 0..=(p % 4) {
                v.push(Sample {
                    path: PathBuf::from(format!("PNEUMONIA/person{p}_virus_{n}.jpeg")),
                    label: Label::Pneumonia,
                    patient: format!("person{p}"),
                });
            }
        }
        for p in 0..20 {
            for n in 0..=(p % 3) {
                v.push(Sample {
                    path: PathBuf::from(format!("NORMAL/IM-{p:04}-{n:04}.jpeg")),
                    label: Label::Normal,
                    patient: format!("IM-{p:04}"),
                });
            }
        }
        v
    }

    #[test]
    fn split_keeps_patients_on_one_side_is_stratified_and_seeded() {
        let samples = synthetic();
        let (train, val) = split_by_patient(&samples, 0.2, 42);
        assert_eq!(train.len() + val.len(), samples.len());
        let train_patients: HashSet<&str> =
            train.iter().map(|&i| samples[i].patient.as_str()).collect();
        let val_patients: HashSet<&str> =
            val.iter().map(|&i| samples[i].patient.as_str()).collect();
        assert!(
            train_patients.is_disjoint(&val_patients),
            "a patient is on both sides"
        );
        for label in Label::ALL {
            let total = samples.iter().filter(|s| s.label == label).count() as f64;
            let in_val = val.iter().filter(|&&i| samples[i].label == label).count() as f64;
            let frac = in_val / total;
            assert!((0.15..=0.3).contains(&frac), "{label}: {frac}");
        }
        assert_eq!(
            split_by_patient(&samples, 0.2, 42),
            (train.clone(), val.clone())
        );
        assert_ne!(split_by_patient(&samples, 0.2, 43).1, val);
    }

    #[test]
    fn corrections_relabel_listed_images_and_add_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::path::absolute(dir.path()).unwrap();
        for sub in ["train/NORMAL", "train/PNEUMONIA", "ward"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        for f in [
            "train/NORMAL/IM-0001-0001.jpeg",
            "train/PNEUMONIA/person1_virus_1.jpeg",
            "ward/person9_bacteria_3.jpeg",
        ] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        let mut samples = list_labelled(&root.join("train")).unwrap();
        let csv = format!(
            "path,final_label\n{}/train/NORMAL/IM-0001-0001.jpeg,PNEUMONIA\n\
             {}/train/PNEUMONIA/person1_virus_1.jpeg,PNEUMONIA\n\
             ward/person9_bacteria_3.jpeg,NORMAL\nward/missing.jpeg,NORMAL\n",
            root.display(),
            root.display()
        );
        let file = crate::worklist::LabelFile::parse(csv.as_bytes(), &root).unwrap();
        assert_eq!(apply_corrections(&mut samples, &file), (1, 1));
        let find = |name: &str| samples.iter().find(|s| s.path.ends_with(name)).unwrap();
        assert_eq!(find("IM-0001-0001.jpeg").label, Label::Pneumonia);
        let added = find("person9_bacteria_3.jpeg");
        assert_eq!(
            (added.label, added.patient.as_str()),
            (Label::Normal, "person9")
        );
        assert_eq!(samples.len(), 3);
    }
}
