//! Which processes write an external run: those whose working directory is the run folder or
//! that hold a file in it open (PyTorch's and TensorFlow's writers keep their event file open
//! for the whole run). Read from `/proc/<pid>/cwd` and `/proc/<pid>/fd` on Linux; elsewhere no
//! writer is found and a run's status comes from its files growing alone. Processes of other
//! users whose `/proc` entries cannot be read are passed over.

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
        let mut hit = |i: usize| {
            if !out[i].contains(&pid) {
                out[i].push(pid);
            }
        };
        if let Ok(cwd) = std::fs::read_link(base.join("cwd"))
            && let Some(i) = index.get(cwd.as_path())
        {
            hit(*i);
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
}
