//! `cxr-triage scan DIR`, run as a user would, on folders generated here.

use std::fs;
use std::io::Cursor;
use std::path::Path;
use std::process::Command;

use image::{DynamicImage, ImageFormat};

fn scan(dir: &Path) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_cxr-triage"))
        .arg("scan")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the cxr-triage binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    )
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, format)
        .expect("encoding to memory");
    out.into_inner()
}

/// Every file under `dir` with its size and modification time.
fn snapshot(dir: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut entries: Vec<_> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| {
            let e = e.expect("walking the temporary folder");
            let m = e.metadata().expect("metadata of a temporary file");
            (
                e.path().display().to_string(),
                m.len(),
                m.modified().expect("modification time"),
            )
        })
        .collect();
    entries.sort();
    entries
}

#[test]
fn scan_lists_every_study_in_order_with_its_error_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("b")).unwrap();
    let gray = DynamicImage::ImageLuma8(image::GrayImage::from_fn(30, 20, |x, y| {
        image::Luma([(x * 8 + y) as u8])
    }));
    fs::write(root.join("a.jpg"), encode(&gray, ImageFormat::Jpeg)).unwrap();
    let deep = DynamicImage::ImageLuma16(image::ImageBuffer::from_fn(12, 7, |x, _| {
        image::Luma([(x * 5000) as u16])
    }));
    fs::write(root.join("b/c.png"), encode(&deep, ImageFormat::Png)).unwrap();
    fs::write(root.join("empty.dcm"), b"").unwrap();
    fs::write(root.join("notes.jpg"), b"call the ward about bed 4\n").unwrap();
    fs::write(root.join("report.pdf"), b"%PDF-1.4\n").unwrap();
    fs::write(root.join(".hidden.jpg"), b"").unwrap();
    let before = snapshot(root);

    let (code, stdout, stderr) = scan(root);
    assert_eq!(code, 0, "stderr: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "a.jpg  JPEG  30x20  8-bit  MONOCHROME2  OK",
            "b/c.png  PNG  12x7  16-bit  MONOCHROME2  OK",
            "empty.dcm  error: empty file (0 bytes)",
            "notes.jpg  error: not an image: text file",
            "report.pdf  error: not an image: PDF document",
            "5 studies, 3 failed",
        ]
    );
    // Scanning never writes to the folder.
    assert_eq!(snapshot(root), before);
}

#[cfg(unix)]
#[test]
fn scan_reports_symlink_loops_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("sub")).unwrap();
    std::os::unix::fs::symlink(root, root.join("sub/back")).unwrap();
    let (code, stdout, _) = scan(root);
    assert_eq!(code, 0);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "sub/back  skipped: symbolic link loop: this folder links back to one of its parent folders; skipped",
            "0 studies, 0 failed, 1 entry skipped",
        ]
    );
}

#[test]
fn scan_of_an_unreadable_folder_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-folder");
    let (code, stdout, stderr) = scan(&missing);
    assert_ne!(code, 0);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("cannot scan the folder: no such file or folder"),
        "{stderr}"
    );
    assert!(stderr.contains("no-such-folder"), "{stderr}");

    let file = dir.path().join("a.jpg");
    fs::write(&file, b"x").unwrap();
    let (code, _, stderr) = scan(&file);
    assert_ne!(code, 0);
    assert!(stderr.contains("not a folder"), "{stderr}");
}

#[test]
fn scan_of_ten_thousand_small_files_completes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let png = encode(
        &DynamicImage::ImageLuma8(image::GrayImage::from_fn(4, 4, |x, y| {
            image::Luma([(x * 60 + y) as u8])
        })),
        ImageFormat::Png,
    );
    for folder in 0..10 {
        let sub = root.join(format!("batch{folder}"));
        fs::create_dir(&sub).unwrap();
        for i in 0..1000 {
            if i % 100 == 99 {
                fs::write(sub.join(format!("{i:04}.png")), b"not really").unwrap();
            } else {
                fs::write(sub.join(format!("{i:04}.png")), &png).unwrap();
            }
        }
    }
    let (code, stdout, stderr) = scan(root);
    assert_eq!(code, 0, "stderr: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 10_001);
    assert_eq!(
        lines[0],
        "batch0/0000.png  PNG  4x4  8-bit  MONOCHROME2  OK"
    );
    assert_eq!(lines[99], "batch0/0099.png  error: not an image: text file");
    assert_eq!(
        lines[9_999],
        "batch9/0999.png  error: not an image: text file"
    );
    assert_eq!(lines[10_000], "10000 studies, 100 failed");
}

/// Runs cxr-triage with `args`, in `cwd`.
fn cli(args: &[&str], cwd: &Path) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_cxr-triage"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .env("XDG_DATA_HOME", cwd.join("data-home"))
        .output()
        .expect("the cxr-triage binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn score_and_explain_never_write_over_the_store_a_study_or_through_a_link() {
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let root = tmp.path();
    let studies = root.join("studies");
    fs::create_dir_all(&studies).expect("a folder");
    let film = DynamicImage::ImageLuma8(image::GrayImage::from_fn(96, 80, |x, y| {
        image::Luma([((x * 7 + y * 3) % 200 + 20) as u8])
    }));
    let study = studies.join("a.png");
    fs::write(&study, encode(&film, ImageFormat::Png)).expect("a study");
    let db = root.join("store.sqlite3");
    let (code, err) = cli(
        &["score", "studies", "--db", db.to_str().expect("UTF-8")],
        root,
    );
    assert_eq!(code, 0, "{err}");
    let store_before = fs::read(&db).expect("the store");
    let study_before = fs::read(&study).expect("the study");

    // `score --csv` onto the store, onto a study, or anywhere inside the studies' folder.
    for (dest, why) in [
        ("store.sqlite3", "decision store"),
        ("studies/a.png", "never written to"),
        ("studies/ranking.csv", "never written to"),
    ] {
        let (code, err) = cli(
            &["score", "studies", "--db", "store.sqlite3", "--csv", dest],
            root,
        );
        assert_eq!(code, 1, "score --csv {dest}: {err}");
        assert!(err.contains(why), "score --csv {dest}: {err}");
    }
    assert!(!studies.join("ranking.csv").exists());
    // `explain X --out X` would have replaced the study with its heat map.
    let (code, err) = cli(
        &["explain", "studies/a.png", "--out", "studies/a.png"],
        root,
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("input"), "{err}");
    #[cfg(unix)]
    {
        let precious = root.join("precious.txt");
        fs::write(&precious, "keep").expect("a file");
        std::os::unix::fs::symlink(&precious, root.join("heat.png")).expect("a link");
        let (code, err) = cli(&["explain", "studies/a.png", "--out", "heat.png"], root);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(fs::read_to_string(&precious).expect("the file"), "keep");
    }
    assert_eq!(fs::read(&db).expect("the store"), store_before);
    assert_eq!(fs::read(&study).expect("the study"), study_before);

    // Beside the folder, both write, and a second run replaces the file whole.
    for _ in 0..2 {
        let (code, err) = cli(&["score", "studies", "--csv", "ranking.csv"], root);
        assert_eq!(code, 0, "{err}");
    }
    let ranking = fs::read_to_string(root.join("ranking.csv")).expect("the ranking");
    assert_eq!(ranking.lines().count(), 2, "{ranking}");
    let (code, err) = cli(&["explain", "studies/a.png", "--out", "a-heat.png"], root);
    assert_eq!(code, 0, "{err}");
    assert!(image::open(root.join("a-heat.png")).is_ok());
}

#[cfg(unix)]
#[test]
fn a_new_line_or_escape_in_a_file_name_keeps_one_line_per_study() {
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let film = DynamicImage::ImageLuma8(image::GrayImage::from_fn(64, 64, |x, y| {
        image::Luma([((x + y) % 250) as u8])
    }));
    let png = encode(&film, ImageFormat::Png);
    fs::write(tmp.path().join("two\nlines.png"), &png).expect("a study");
    fs::write(tmp.path().join("red\u{1b}[31m.png"), &png).expect("a study");
    let (code, stdout, _) = scan(tmp.path());
    assert_eq!(code, 0);
    assert!(!stdout.contains('\u{1b}'), "{stdout:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "two studies and the summary: {stdout:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("two\\x0Alines.png  PNG")),
        "{stdout:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("red\\x1B[31m.png  PNG")),
        "{stdout:?}"
    );
}
