//! Which processes write an external run: those whose working directory is the run folder, that
//! hold a file in it open (TensorFlow's and tensorboardX's writers keep their event file open),
//! or that were given the folder or its parent on their command line (`train.py --logdir
//! logs/exp1`; PyTorch's writer reopens its file for each flush, and Lightning makes
//! `version_N` under the folder it is given). Read from `/proc/<pid>/{cwd,fd,cmdline}` on Linux;
//! elsewhere no writer is found and a run's status comes from its files changing alone.
//! Processes of other users whose `/proc` entries cannot be read are passed over.

use std::collections::HashMap;
use std::path::PathBuf;

/// For each folder (canonical paths), the processes writing it, by pid (this one excluded).
pub fn writers(dirs: &[PathBuf]) -> Vec<Vec<u32>> {
    let mut out = vec![Vec::new(); dirs.len()];
    if cfg!(target_os = "linux") && !dirs.is_empty() {
        scan_proc(dirs, &mut out);
    }
    out
}

fn scan_proc(dirs: &[PathBuf], out: &mut [Vec<u32>]) {
    let index: HashMap<&std::path::Path, usize> =
        dirs.iter().enumerate().map(|(i, d)| (d.as_path(), i)).collect();
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else { return };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let base = p.path();
        let cmdline = std::fs::read(base.join("cmdline")).unwrap_or_default();
        if is_viewer(&cmdline) {
            continue;
        }
        let mut hit = |i: usize| {
            if !out[i].contains(&pid) {
                out[i].push(pid);
            }
        };
        let cwd = std::fs::read_link(base.join("cwd")).ok();
        if let Some(i) = cwd.as_deref().and_then(|c| index.get(c)) {
            hit(*i);
        }
        if let Some(cwd) = &cwd {
            for arg in cmdline.split(|b| *b == 0).skip(1).filter(|a| !a.is_empty() && a[0] != b'-') {
                let p = normalise(&cwd.join(String::from_utf8_lossy(arg).as_ref()));
                for (d, i) in &index {
                    if *d == p.as_path() || d.parent() == Some(p.as_path()) {
                        hit(*i);
                    }
                }
            }
        }
        let Ok(fds) = std::fs::read_dir(base.join("fd")) else { continue };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && let Some(i) = target.parent().and_then(|d| index.get(d))
            {
                hit(*i);
            }
        }
    }
}

/// Programs that read run folders without writing them (TensorBoard and its data server, which
/// hold the files open and are given the log folder; Vigil, also behind a wrapper such as
/// `timeout 60 vigil ...` or `nohup vigil ...`; pagers and `tail -f` on a log): never taken for
/// a writer.
fn is_viewer(cmdline: &[u8]) -> bool {
    let names: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).rsplit('/').next().unwrap_or("").to_string())
        .collect();
    let readers = ["tail", "less", "more", "cat", "head", "grep", "watch"];
    names.first().is_some_and(|n| readers.contains(&n.as_str()))
        || names.iter().any(|n| n.starts_with("tensorboard") || n == "vigil")
}

/// A path with `.` and `..` resolved by its text (no file-system calls: this runs for every
/// argument of every process).
fn normalise(p: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn a_process_holding_a_file_open_in_the_folder_is_its_writer() {
        let dir = tempfile::tempdir().unwrap();
        let d = std::fs::canonicalize(dir.path()).unwrap();
        let file = d.join("events.out.tfevents.1.x");
        std::fs::write(&file, b"").unwrap();
        // A child that holds the file open on its stdin.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(std::fs::File::open(&file).unwrap())
            .spawn()
            .unwrap();
        let found = writers(std::slice::from_ref(&d));
        let _ = child.kill();
        let _ = child.wait();
        assert!(found[0].contains(&child.id()), "{found:?}");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_process_given_the_folder_or_its_parent_on_its_command_line_is_its_writer() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let run = root.join("logs/version_0");
        std::fs::create_dir_all(&run).unwrap();
        // `--logdir logs` from the folder above, as Lightning's loggers are given it.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30; true", "train.py", "./logs/"])
            .current_dir(&root)
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let found = writers(&[run, root.join("elsewhere")]);
        let _ = child.kill();
        let _ = child.wait();
        assert!(found[0].contains(&child.id()), "{found:?}");
        assert!(found[1].is_empty());
    }

    #[test]
    fn tensorboard_and_vigil_are_viewers_not_writers() {
        assert!(is_viewer(b"/usr/bin/python3\0/venv/bin/tensorboard\0--logdir\0logs\0"));
        assert!(is_viewer(b"/x/tensorboard_data_server\0--logdir\0logs\0"));
        assert!(is_viewer(b"timeout\x0060\0target/release/vigil\0runs\0--watch\0logs\0"));
        assert!(is_viewer(b"tail\0-f\0logs/run/metrics.csv\0"));
        assert!(!is_viewer(b"python\0train.py\0--logdir\0logs\0"));
        assert!(is_viewer(b"target/release/vigil\0--watch\0logs\0"));
        assert!(!is_viewer(b"python\0train.py\0--logdir\0logs\0"));
    }
}
