//! Training data: labelled image folders (`NORMAL/`, `PNEUMONIA/`), the NIH adult films
//! (`labels.csv`), patient ids, and the patient-level splits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::SeedableRng as _;
use rand::seq::SliceRandom as _;

use crate::worklist::Label;

/// Where a labelled image comes from: each source is validated and reported on its own.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Kermany et al. 2018: paediatric films of one hospital in Guangzhou (`NORMAL/`, `PNEUMONIA/`
    /// folders).
    #[default]
    Kermany,
    /// Adult films of the NIH Clinical Center (`labels.csv`, see [`list_nih_adult`]).
    NihAdult,
}

impl Source {
    /// The name used in the model card and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kermany => "kermany",
            Self::NihAdult => "nih-adult",
        }
    }
}

/// One labelled image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Where the image is.
    pub path: PathBuf,
    /// Its label, from the folder it is in or the labels file.
    pub label: Label,
    /// The patient it belongs to.
    pub patient: String,
    /// The data set it comes from.
    pub source: Source,
    /// Who gave the label, where the source says (`rsna` radiologists or `nih` text mining).
    pub label_source: Option<String>,
    /// A film with another finding than pneumonia (NIH `other`), labelled NORMAL here: it is
    /// "not pneumonia", not a normal film. Never in a validation metric.
    pub other_finding: bool,
}

impl Sample {
    /// A Kermany-style sample: source Kermany, patient from the file name.
    pub fn from_folder(path: PathBuf, label: Label) -> Self {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self {
            patient: patient_id(&name),
            path,
            label,
            source: Source::Kermany,
            label_source: None,
            other_finding: false,
        }
    }
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
    /// A `labels.csv` cannot be read or has a bad row.
    #[error("cannot use the labels file {path}: {reason}")]
    LabelsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The file that lists a folder's labels in the NIH adult layout (see [`list_nih_adult`]).
pub const NIH_LABELS_FILE: &str = "labels.csv";

/// One row of `nih-adult/labels.csv`.
#[derive(Debug, serde::Deserialize)]
struct NihRow {
    path: String,
    label: String,
    label_source: String,
    patient_id: String,
}

/// The NIH adult films of `dir` (`labels.csv`: `path,label,label_source,patient_id,…`, paths
/// relative to `dir`), sorted by path. `normal` and `pneumonia` keep their label; `other` films
/// (another finding) come as NORMAL with [`Sample::other_finding`] set, so that the caller
/// decides whether to use them.
pub fn list_nih_adult(dir: &Path) -> Result<Vec<Sample>, DatasetError> {
    let file = dir.join(NIH_LABELS_FILE);
    let bad = |reason: String| DatasetError::LabelsFile {
        path: file.clone(),
        reason,
    };
    let mut reader = csv::Reader::from_path(&file).map_err(|e| bad(e.to_string()))?;
    let mut samples = Vec::new();
    for (line, row) in reader.deserialize::<NihRow>().enumerate() {
        let row = row.map_err(|e| bad(format!("row {}: {e}", line + 2)))?;
        let (label, other_finding) = match row.label.as_str() {
            "normal" => (Label::Normal, false),
            "pneumonia" => (Label::Pneumonia, false),
            "other" => (Label::Normal, true),
            other => return Err(bad(format!("row {}: unknown label {other:?}", line + 2))),
        };
        samples.push(Sample {
            path: dir.join(&row.path),
            label,
            patient: row.patient_id,
            source: Source::NihAdult,
            label_source: Some(row.label_source),
            other_finding,
        });
    }
    samples.sort_by(|a, b| a.path.cmp(&b.path));
    for label in Label::ALL {
        if !samples.iter().any(|s| s.label == label && !s.other_finding) {
            return Err(bad(format!("no {label} film")));
        }
    }
    Ok(samples)
}

/// Splits the NIH adult films into (train, validation) indices by patient, stratified by label,
/// label source and `other`, with `seed`: within each stratum the patients are shuffled and
/// taken into validation until it holds about `val_fraction` of the stratum's films.
pub fn split_nih_adult(
    samples: &[Sample],
    val_fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    split_stratified(samples, val_fraction, seed, |s| {
        (
            s.label,
            s.other_finding,
            s.label_source.clone().unwrap_or_default(),
        )
    })
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
            samples.push(Sample::from_folder(file.path(), label));
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
            by_path.insert(path.to_owned(), samples.len());
            samples.push(Sample::from_folder(path.to_owned(), label));
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
    split_stratified(samples, val_fraction, seed, |s| s.label)
}

/// The patient-level split of [`split_by_patient`] over the strata that `stratum` gives, in the
/// strata's order.
fn split_stratified<K: Ord>(
    samples: &[Sample],
    val_fraction: f64,
    seed: u64,
    stratum: impl Fn(&Sample) -> K,
) -> (Vec<usize>, Vec<usize>) {
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut val = Vec::new();
    let mut train = Vec::new();
    let mut strata: BTreeMap<K, Vec<usize>> = BTreeMap::new();
    for (i, s) in samples.iter().enumerate() {
        strata.entry(stratum(s)).or_default().push(i);
    }
    for members in strata.into_values() {
        // Patient -> image indices, in a deterministic (sorted) order before shuffling.
        let mut by_patient: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for i in members {
            by_patient.entry(&samples[i].patient).or_default().push(i);
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
                v.push(Sample::from_folder(
                    PathBuf::from(format!("PNEUMONIA/person{p}_virus_{n}.jpeg")),
                    Label::Pneumonia,
                ));
            }
        }
        for p in 0..20 {
            for n in 0..=(p % 3) {
                v.push(Sample::from_folder(
                    PathBuf::from(format!("NORMAL/IM-{p:04}-{n:04}.jpeg")),
                    Label::Normal,
                ));
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
    fn nih_adult_labels_are_read_and_split_by_patient_within_each_stratum() {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from(
            "path,label,label_source,patient_id,age,sex,view,nih_findings,rsna_class\n",
        );
        // 40 normal and 12 pneumonia films from each label source, 28 other; one film each.
        let mut n = 0;
        for (label, count) in [("normal", 40), ("pneumonia", 12), ("other", 14)] {
            for source in ["rsna", "nih"] {
                for _ in 0..count {
                    csv += &format!("images/{n:08}_000.png,{label},{source},{n:08},50,F,PA,x,\n");
                    n += 1;
                }
            }
        }
        std::fs::write(dir.path().join(NIH_LABELS_FILE), csv).unwrap();
        let samples = list_nih_adult(dir.path()).unwrap();
        assert_eq!(samples.len(), 132);
        assert!(samples.iter().all(|s| s.source == Source::NihAdult));
        let others = samples.iter().filter(|s| s.other_finding).count();
        assert_eq!(others, 28);
        assert!(
            samples
                .iter()
                .filter(|s| s.other_finding)
                .all(|s| s.label == Label::Normal)
        );
        let (train, val) = split_nih_adult(&samples, 0.5, 3);
        assert_eq!(train.len() + val.len(), samples.len());
        // Half of every stratum (label, other, label source) is in validation.
        for (label, other) in [
            (Label::Normal, false),
            (Label::Pneumonia, false),
            (Label::Normal, true),
        ] {
            for source in ["rsna", "nih"] {
                let in_stratum = |i: &&usize| {
                    let s = &samples[**i];
                    s.label == label
                        && s.other_finding == other
                        && s.label_source.as_deref() == Some(source)
                };
                assert_eq!(
                    val.iter().filter(in_stratum).count(),
                    train.iter().filter(in_stratum).count(),
                    "{label} {other} {source}"
                );
            }
        }
        assert_eq!(split_nih_adult(&samples, 0.5, 3), (train, val.clone()));
        assert_ne!(split_nih_adult(&samples, 0.5, 4).1, val);
        // A bad label is refused with its row.
        std::fs::write(
            dir.path().join(NIH_LABELS_FILE),
            "path,label,label_source,patient_id\na.png,maybe,nih,1\n",
        )
        .unwrap();
        let err = list_nih_adult(dir.path()).unwrap_err().to_string();
        assert!(err.contains("row 2") && err.contains("maybe"), "{err}");
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
