//! Importing corrected labels from CSV: good rows become relabel events, bad rows are reported by
//! line and not recorded.

#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

mod audit_common;

use std::path::{Path, PathBuf};

use audit_common::confirm;
use cxr_triage::audit::{
    Action, AuditError, DEFAULT_IMPORT_REASON, DecisionStore, RowProblem, StudyRecord, import_csv,
};
use cxr_triage::io::sha256_hex;
use cxr_triage::worklist::Label;

/// A study folder with three small files, a store that knows the first two (and fixture study
/// 0), and the files' hashes.
struct Fixture {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    folder: PathBuf,
    store: DecisionStore,
    hashes: Vec<String>,
}

fn fixture() -> Fixture {
    let studies = tempfile::tempdir().unwrap();
    let db_dir = tempfile::tempdir().unwrap();
    let folder = studies.path().join("ward b");
    std::fs::create_dir(&folder).unwrap();
    let mut hashes = Vec::new();
    for i in 0..3 {
        let bytes = format!("pretend image {i}").into_bytes();
        std::fs::write(folder.join(format!("img{i}.jpeg")), &bytes).unwrap();
        hashes.push(sha256_hex(&bytes));
    }
    let store = audit_common::store_with_studies(db_dir.path(), 1);
    for (i, sha) in hashes.iter().enumerate().take(2) {
        store
            .upsert_study(&StudyRecord {
                sha256: sha.clone(),
                path: folder.join(format!("img{i}.jpeg")),
                patient_id: None,
                study_uid: None,
                metadata_json: "{}".to_owned(),
            })
            .unwrap();
    }
    Fixture {
        _dirs: (studies, db_dir),
        folder,
        store,
        hashes,
    }
}

fn snapshot(folder: &Path) -> Vec<(PathBuf, Vec<u8>, std::time::SystemTime)> {
    let mut v: Vec<_> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let modified = p.metadata().unwrap().modified().unwrap();
            (p.clone(), std::fs::read(&p).unwrap(), modified)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn good_rows_become_relabel_events_and_bad_rows_are_reported_by_line() {
    let mut f = fixture();
    f.store.record(&confirm(0, 0.9)).unwrap(); // Fixture study 0: PNEUMONIA, by dr-alice.
    let before = snapshot(&f.folder);
    let unknown = sha256_hex(b"never seen");
    let csv_text = format!(
        "Path,SHA256,Label,Reason\n\
         img0.jpeg,,pneumonia,seen on the lateral\n\
         ,{sha0_upper},NORMAL,\n\
         ,{unknown},NORMAL,x\n\
         img1.jpeg,,maybe,unsure\n\
         missing.jpeg,,NORMAL,x\n\
         img2.jpeg,,NORMAL,file exists but the store never saw it\n\
         img1.jpeg,{sha0},NORMAL,path and hash disagree\n\
         ,,NORMAL,no study named\n\
         \n\
         img1.jpeg,,1,\"quoted, with a comma\"\n",
        sha0_upper = audit_common::sha(0).to_uppercase(),
        sha0 = audit_common::sha(0),
    );
    let report = import_csv(&mut f.store, csv_text.as_bytes(), &f.folder, "dr-carol").unwrap();
    assert!(report.stopped_by.is_none());

    let recorded: Vec<u64> = report.recorded.iter().map(|r| r.line).collect();
    assert_eq!(recorded, [2, 3, 11]);
    let rejected: Vec<(u64, RowProblem)> = report
        .rejected
        .iter()
        .map(|r| (r.line, r.problem.clone()))
        .collect();
    assert_eq!(
        rejected,
        [
            (4, RowProblem::UnknownStudy),
            (5, RowProblem::InvalidLabel("maybe".to_owned())),
            (
                6,
                RowProblem::UnreadableFile("no such file or folder".to_owned())
            ),
            (7, RowProblem::UnknownStudy),
            (8, RowProblem::PathAndSha256Disagree),
            (9, RowProblem::NoStudy),
        ]
    );
    assert_eq!(f.store.event_count().unwrap(), 4);

    let h0 = f.store.history(&f.hashes[0]).unwrap();
    assert_eq!(h0.len(), 1);
    let e = &h0[0];
    assert_eq!(e.action, Action::Relabel);
    assert_eq!(e.reader, "dr-carol");
    assert_eq!(e.reason, "seen on the lateral");
    assert_eq!((e.prev_label, e.new_label), (None, Some(Label::Pneumonia)));
    assert_eq!(
        e.study_path,
        f.folder.join("img0.jpeg").canonicalize().unwrap()
    );
    assert_eq!(
        (e.score, e.ai_label, e.model_id.as_deref()),
        (None, None, None)
    );

    // By hash: the reader overrode an earlier confirmation, with no reason given.
    let s0 = f.store.current(&audit_common::sha(0)).unwrap().unwrap();
    assert_eq!(s0.last_event.prev_label, Some(Label::Pneumonia));
    assert_eq!(s0.final_label, Some(Label::Normal));
    assert_eq!(s0.agreed, Some(false));
    assert_eq!(s0.last_event.reason, DEFAULT_IMPORT_REASON);
    assert_eq!(s0.last_event.study_path, audit_common::study_path(0));

    let h1 = f.store.history(&f.hashes[1]).unwrap();
    assert_eq!(h1.len(), 1);
    assert_eq!(h1[0].reason, "quoted, with a comma");
    assert!(f.store.verify().unwrap().is_intact());
    // The study folder was only read.
    assert_eq!(snapshot(&f.folder), before);
}

#[test]
fn a_file_without_the_needed_columns_records_nothing() {
    let mut f = fixture();
    let no_label = "path,reason\nimg0.jpeg,x\n";
    let err = import_csv(&mut f.store, no_label.as_bytes(), &f.folder, "dr-carol").unwrap_err();
    assert!(matches!(err, AuditError::Csv(_)), "{err}");
    assert!(err.to_string().contains("label"), "{err}");
    let no_study = "label,reason\nNORMAL,x\n";
    assert!(import_csv(&mut f.store, no_study.as_bytes(), &f.folder, "dr-carol").is_err());
    let good = "path,label\nimg0.jpeg,NORMAL\n";
    assert!(matches!(
        import_csv(&mut f.store, good.as_bytes(), &f.folder, "  "),
        Err(AuditError::InvalidDecision(_))
    ));
    assert_eq!(f.store.event_count().unwrap(), 0);
}

#[test]
fn absolute_paths_and_a_spreadsheet_bom_are_accepted() {
    let mut f = fixture();
    let abs = f.folder.join("img1.jpeg");
    let csv_text = format!("\u{feff}label,path\nNORMAL,{}\n", abs.display());
    let report = import_csv(
        &mut f.store,
        csv_text.as_bytes(),
        Path::new("/nonexistent"),
        "dr-carol",
    )
    .unwrap();
    assert_eq!(report.rejected, []);
    assert_eq!(report.recorded.len(), 1);
    assert_eq!(
        f.store.current(&f.hashes[1]).unwrap().unwrap().final_label,
        Some(Label::Normal)
    );
}

#[test]
fn an_unclosed_quote_or_a_repeated_column_rejects_the_whole_file_with_its_line() {
    let mut f = fixture();
    // The quote opened on line 2 would swallow line 3 into a reason ("recorded 1, rejected 0").
    let unclosed = "path,label,reason\nimg0.jpeg,NORMAL,\"typo\nimg1.jpeg,PNEUMONIA,fine\n";
    let err = import_csv(&mut f.store, unclosed.as_bytes(), &f.folder, "dr-carol").unwrap_err();
    assert!(matches!(err, AuditError::Csv(_)), "{err}");
    assert!(err.to_string().contains("line 2"), "{err}");
    // A quote escaped RFC 4180's way, and a reason over two lines, are fine.
    let fine = "path,label,reason\nimg0.jpeg,NORMAL,\"said \"\"no\"\"\nthen yes\"\nimg1.jpeg,PNEUMONIA,ok\n";
    let report = import_csv(&mut f.store, fine.as_bytes(), &f.folder, "dr-carol").unwrap();
    assert_eq!(report.rejected, []);
    assert_eq!(
        report.recorded.iter().map(|r| r.line).collect::<Vec<_>>(),
        [2, 4]
    );
    let twice = "path,label,Label\nimg0.jpeg,NORMAL,PNEUMONIA\n";
    let err = import_csv(&mut f.store, twice.as_bytes(), &f.folder, "dr-carol").unwrap_err();
    assert!(err.to_string().contains("appears twice"), "{err}");
    assert_eq!(f.store.event_count().unwrap(), 2);
}

#[cfg(unix)]
#[test]
fn a_row_naming_a_device_or_a_named_pipe_is_rejected_without_reading_it() {
    let mut f = fixture();
    let fifo = f.folder.join("pipe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    let mut csv_text = "path,label\n/dev/zero,NORMAL\n".to_owned();
    if made.is_ok_and(|s| s.success()) {
        csv_text.push_str("pipe,NORMAL\n");
    } else {
        eprintln!("skipped the named pipe: mkfifo is not available");
    }
    csv_text.push_str("img0.jpeg,NORMAL\n");
    let report = import_csv(&mut f.store, csv_text.as_bytes(), &f.folder, "dr-carol").unwrap();
    assert!(
        report
            .rejected
            .iter()
            .all(|r| r.problem.to_string().contains("not a regular file")),
        "{:?}",
        report.rejected
    );
    assert!(!report.rejected.is_empty());
    assert_eq!(report.recorded.len(), 1);
}

#[test]
fn line_numbers_stay_right_over_many_rows_and_blank_lines() {
    let mut f = fixture();
    let mut csv_text = "sha256,label\n".to_owned();
    for i in 0..3000 {
        if i % 7 == 0 {
            csv_text.push('\n');
        }
        let sha = if i % 2 == 0 {
            f.hashes[0].clone()
        } else {
            "0".repeat(64)
        };
        csv_text.push_str(&format!(
            "{sha},{}\n",
            if i % 4 == 0 { "NORMAL" } else { "PNEUMONIA" }
        ));
    }
    let report = import_csv(&mut f.store, csv_text.as_bytes(), &f.folder, "dr-carol").unwrap();
    let lines: Vec<u64> = csv_text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with('0'))
        .map(|(i, _)| i as u64 + 1)
        .collect();
    assert_eq!(
        report.rejected.iter().map(|r| r.line).collect::<Vec<_>>(),
        lines
    );
    assert_eq!(report.recorded.len(), 1500);
}
