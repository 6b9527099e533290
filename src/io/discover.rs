//! Finding every candidate study under a folder, recursively, in a deterministic order.

use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use super::LoadError;

/// A file found under the scanned folder. Whether it is an image is decided when it is loaded.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DiscoveredFile {
    /// Absolute path (through any symbolic links, as found; not resolved).
    pub path: PathBuf,
    /// Path relative to the scanned folder, for display.
    pub rel_path: PathBuf,
}

/// The outcome of [`discover`]: the files, sorted by relative path, and what could not be
/// looked at.
#[derive(Debug, Default)]
pub struct Discovery {
    /// Every regular, non-hidden file, sorted by relative path.
    pub files: Vec<DiscoveredFile>,
    /// Sub-folders that could not be read, symbolic link loops, broken links and special files,
    /// with their path relative to the scanned folder.
    pub problems: Vec<(PathBuf, LoadError)>,
}

/// Lists every regular file under `root`, recursively.
///
/// Entries whose name starts with '.' are skipped (and hidden folders are not entered).
/// Symbolic links to files and folders are followed; a link back to an ancestor folder is
/// reported as a problem and not followed, so the walk always ends. Nothing is opened but
/// folders: whether a file is an image is decided when it is loaded, so junk shows up too.
///
/// Fails only when `root` itself is missing, not a folder, or cannot be listed.
pub fn discover(root: &Path) -> Result<Discovery, LoadError> {
    let root = std::path::absolute(root).map_err(|e| LoadError::from_io(&e))?;
    let metadata = std::fs::metadata(&root).map_err(|e| LoadError::from_io(&e))?;
    if !metadata.is_dir() {
        return Err(LoadError::NotAFolder);
    }
    // Listing the root up front tells "cannot read the folder" apart from "empty folder".
    std::fs::read_dir(&root).map_err(|e| LoadError::from_io(&e))?;

    let mut discovery = Discovery::default();
    let walker = WalkDir::new(&root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| entry.depth() == 0 || !is_hidden(entry.file_name()));
    for entry in walker {
        match entry {
            Ok(entry) => {
                let file_type = entry.file_type();
                if file_type.is_dir() {
                    continue;
                }
                let rel_path = relative(&root, entry.path());
                if file_type.is_file() {
                    discovery.files.push(DiscoveredFile {
                        path: entry.into_path(),
                        rel_path,
                    });
                } else {
                    discovery
                        .problems
                        .push((rel_path, LoadError::NotRegularFile));
                }
            }
            Err(err) => {
                let rel_path = err
                    .path()
                    .map_or_else(PathBuf::new, |path| relative(&root, path));
                let problem = if err.loop_ancestor().is_some() {
                    LoadError::SymlinkLoop
                } else if let Some(io) = err.io_error() {
                    let is_link = err
                        .path()
                        .and_then(|p| std::fs::symlink_metadata(p).ok())
                        .is_some_and(|m| m.file_type().is_symlink());
                    if is_link && io.kind() == std::io::ErrorKind::NotFound {
                        LoadError::BrokenLink
                    } else {
                        LoadError::from_io(io)
                    }
                } else {
                    LoadError::Read("the folder cannot be listed".into())
                };
                discovery.problems.push((rel_path, problem));
            }
        }
    }
    discovery.files.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    discovery.problems.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(discovery)
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

fn relative(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root).unwrap_or(path).to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn files_are_sorted_and_hidden_entries_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("b/nested")).unwrap();
        fs::create_dir_all(root.join(".hidden_dir")).unwrap();
        for name in [
            "z.jpg",
            "a.dcm",
            "b/nested/c.png",
            "b/a.txt",
            ".DS_Store",
            ".hidden_dir/x.dcm",
            "b/.secret.jpg",
        ] {
            fs::write(root.join(name), b"x").unwrap();
        }
        let found = discover(root).unwrap();
        let names: Vec<_> = found
            .files
            .iter()
            .map(|f| f.rel_path.to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.dcm", "b/a.txt", "b/nested/c.png", "z.jpg"]);
        assert!(found.problems.is_empty());
        assert!(found.files.iter().all(|f| f.path.is_absolute()));
    }

    #[test]
    fn root_errors_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            discover(&dir.path().join("missing")).unwrap_err(),
            LoadError::NotFound
        );
        let file = dir.path().join("file.jpg");
        fs::write(&file, b"x").unwrap();
        assert_eq!(discover(&file).unwrap_err(), LoadError::NotAFolder);
    }

    #[cfg(unix)]
    #[test]
    fn symlink_loops_and_broken_links_are_problems_not_hangs() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("studies/sub")).unwrap();
        fs::write(root.join("studies/sub/one.png"), b"x").unwrap();
        // A link back to an ancestor, and a link to a sibling folder (followed).
        symlink(root.join("studies"), root.join("studies/sub/loop")).unwrap();
        fs::create_dir_all(root.join("elsewhere")).unwrap();
        fs::write(root.join("elsewhere/two.png"), b"x").unwrap();
        symlink(root.join("elsewhere"), root.join("studies/linked")).unwrap();
        symlink(root.join("nowhere"), root.join("studies/dangling.dcm")).unwrap();

        let found = discover(&root.join("studies")).unwrap();
        let names: Vec<_> = found
            .files
            .iter()
            .map(|f| f.rel_path.to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["linked/two.png", "sub/one.png"]);
        let problems: Vec<_> = found
            .problems
            .iter()
            .map(|(p, e)| (p.to_string_lossy().into_owned(), e.clone()))
            .collect();
        assert_eq!(
            problems,
            [
                ("dangling.dcm".to_string(), LoadError::BrokenLink),
                ("sub/loop".to_string(), LoadError::SymlinkLoop),
            ]
        );
    }

    #[cfg(unix)]
    #[test]
    fn special_files_are_never_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.dcm");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("skipped: mkfifo is not available to create a named pipe");
            return;
        }
        let found = discover(dir.path()).unwrap();
        assert!(found.files.is_empty());
        assert_eq!(
            found.problems,
            [(PathBuf::from("pipe.dcm"), LoadError::NotRegularFile)]
        );
    }

    #[cfg(unix)]
    #[test]
    fn unreadable_sub_folders_are_problems_and_the_rest_loads() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("locked")).unwrap();
        fs::write(root.join("locked/inside.jpg"), b"x").unwrap();
        fs::write(root.join("open.jpg"), b"x").unwrap();
        fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
        let still_readable = fs::read_dir(root.join("locked")).is_ok();
        let found = discover(root);
        // Restore the permissions so the temporary folder can be removed.
        fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
        let found = found.unwrap();
        if still_readable {
            eprintln!(
                "skipped the permission check: this user (root?) can read a folder with mode 000"
            );
            return;
        }
        let names: Vec<_> = found.files.iter().map(|f| f.rel_path.clone()).collect();
        assert_eq!(names, [PathBuf::from("open.jpg")]);
        assert_eq!(
            found.problems,
            [(PathBuf::from("locked"), LoadError::PermissionDenied)]
        );
    }
}
