//! Whether the runs folder is one Slurm's nodes can write: a trial's job writes its run's folder
//! from its node, so the store must be on a filesystem the nodes share. `--on slurm` looks at the
//! folder's filesystem type (statfs): a network or cluster filesystem (NFS, Lustre, GPFS,
//! BeeGFS, CephFS, CIFS...) passes; a local one passes only when every node of the cluster is
//! this machine (`sinfo`), or when the user says the folder is shared (`--shared-runs-dir`), for
//! the setups statfs cannot see (a FUSE mount, a bind mount of the same disk on each node).
//! Without this check such a sweep submits its jobs, which then fail on their nodes one by one.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// Filesystems whose folders the nodes of a cluster share, by their statfs magic number
/// (linux/magic.h, and each filesystem's own header for those outside the kernel).
const SHARED: &[(u32, &str)] = &[
    (0x6969, "NFS"),
    (0x0BD0_0BD0, "Lustre"),
    (0x4750_4653, "GPFS"),
    (0x1983_0326, "BeeGFS"),
    (0x00C3_6400, "CephFS"),
    (0xFF53_4D42, "CIFS"),
    (0xFE53_4D42, "SMB2"),
    (0x517B, "SMB"),
    (0x5346_414F, "AFS"),
    (0x7461_636F, "OCFS2"),
    (0x0116_1970, "GFS2"),
    (0xAAD7_AAEA, "PanFS"),
];

/// Local filesystems, by magic number, to name them in the refusal.
const LOCAL: &[(u32, &str)] = &[
    (0xEF53, "ext4"),
    (0x5846_5342, "XFS"),
    (0x9123_683E, "Btrfs"),
    (0x0102_1994, "tmpfs"),
    (0x794C_7630, "overlayfs"),
    (0x2FC1_2FC1, "ZFS"),
    (0xF2F5_2010, "F2FS"),
    (0x6573_5546, "FUSE"),
];

/// What statfs says of a folder's filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filesystem {
    /// One the nodes of a cluster share (its name).
    Shared(&'static str),
    /// One of this machine only, or one Vigil cannot tell (its name or magic number).
    Local(String),
}

/// Names a statfs magic number.
pub fn classify(magic: u32) -> Filesystem {
    if let Some((_, name)) = SHARED.iter().find(|(m, _)| *m == magic) {
        return Filesystem::Shared(name);
    }
    match LOCAL.iter().find(|(m, _)| *m == magic) {
        Some((_, name)) => Filesystem::Local((*name).to_string()),
        None => Filesystem::Local(format!("a filesystem of type {magic:#x}")),
    }
}

/// The filesystem of `path`, or of its nearest existing parent (the runs folder may not exist
/// yet). `None` where statfs cannot say (not Linux).
pub fn filesystem_of(path: &Path) -> Option<Filesystem> {
    let mut p: PathBuf = std::path::absolute(path).ok()?;
    while !p.exists() {
        p = p.parent()?.to_path_buf();
    }
    magic(&p).map(classify)
}

#[cfg(target_os = "linux")]
fn magic(path: &Path) -> Option<u32> {
    // f_type is a signed word whose width varies by architecture; the magic numbers are 32-bit.
    #[allow(clippy::unnecessary_cast)]
    rustix::fs::statfs(path).ok().map(|s| s.f_type as u32)
}

#[cfg(not(target_os = "linux"))]
fn magic(_path: &Path) -> Option<u32> {
    None
}

/// This machine's names: its host name, and the loopback names a one-machine cluster uses.
fn this_machine(node: &str) -> bool {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    let short = host.split('.').next().unwrap_or(host);
    let node = node.trim();
    node == "localhost"
        || node.starts_with("127.")
        || node == "::1"
        || (!host.is_empty() && (node == host || node == short || node.split('.').next() == Some(short)))
}

/// The cluster's nodes as `sinfo` lists them: for each, its name, host name and address.
fn nodes() -> Option<Vec<[String; 3]>> {
    let out = Command::new("sinfo").args(["-h", "-N", "-o", "%N|%n|%o"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let nodes: Vec<[String; 3]> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            (f.len() == 3).then(|| [f[0].to_string(), f[1].to_string(), f[2].to_string()])
        })
        .collect();
    (!nodes.is_empty()).then_some(nodes)
}

/// Refuses `--on slurm` with a runs folder the nodes cannot write (bad input: exit 2), before
/// anything is created. `declared`: the user said it is shared (`--shared-runs-dir`).
pub fn check(root: &Path, declared: bool) -> Result<()> {
    if declared {
        return Ok(());
    }
    let fs = match filesystem_of(root) {
        Some(Filesystem::Shared(_)) => return Ok(()),
        Some(Filesystem::Local(name)) => name,
        None => "a filesystem Vigil cannot identify here".to_string(),
    };
    let nodes = nodes();
    if let Some(n) = &nodes
        && n.iter().all(|[name, host, addr]| this_machine(name) || this_machine(host) || this_machine(addr))
    {
        return Ok(());
    }
    let which = match &nodes {
        Some(n) => {
            let names: Vec<&str> = n.iter().map(|[name, ..]| name.as_str()).take(6).collect();
            let more = if n.len() > 6 { format!(" and {} more", n.len() - 6) } else { String::new() };
            format!("the cluster's nodes ({}{more}) are not all this machine", names.join(", "))
        }
        None => "`sinfo` did not list the cluster's nodes, so Vigil cannot tell they are this machine".into(),
    };
    Err(Error::unsuitable(format!(
        "--on slurm: the runs folder {} is on {fs}, which only this machine sees, and {which}; \
         each trial's job writes its run from its node, so the nodes must share the folder. \
         Put the runs on a shared filesystem (NFS, Lustre, GPFS, BeeGFS, CephFS...) with \
         --runs-dir or VIGIL_RUNS_DIR, or pass --shared-runs-dir if the nodes do see this folder",
        root.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_filesystems_are_shared_and_disks_are_not() {
        assert_eq!(classify(0x6969), Filesystem::Shared("NFS"));
        assert_eq!(classify(0x0BD0_0BD0), Filesystem::Shared("Lustre"));
        assert_eq!(classify(0x00C3_6400), Filesystem::Shared("CephFS"));
        assert_eq!(classify(0xEF53), Filesystem::Local("ext4".into()));
        assert_eq!(classify(0x1234), Filesystem::Local("a filesystem of type 0x1234".into()));
    }

    #[test]
    fn loopback_names_are_this_machine() {
        assert!(this_machine("localhost"));
        assert!(this_machine("127.0.0.1"));
        assert!(!this_machine("gpu-node-17"));
    }
}
