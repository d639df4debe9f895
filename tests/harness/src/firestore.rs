//! Google's Cloud Firestore emulator (Java, started by `gcloud`; serves the Firestore gRPC API
//! in plaintext HTTP/2), and the `plants` app on Firestore (`examples/plants_firestore.py`).

use crate::core::{repo, start_on_free_port, wait_for, TempDir};
use std::fs;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The emulator on loopback, its whole process group stopped on drop (gcloud starts Java).
pub struct FirestoreEmulator {
    pub port: u16,
    _group: Group,
    _dir: TempDir,
}

/// A child leading its own process group; the whole group is stopped on drop (gcloud's Java
/// child keeps the port otherwise).
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = self.0.wait();
    }
}

/// Whether the emulator is installed (the machine image's `google-cloud-cli-firestore-emulator`).
pub fn firestore_emulator_installed() -> bool {
    Command::new("gcloud")
        .args(["emulators", "firestore", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl FirestoreEmulator {
    pub fn start() -> FirestoreEmulator {
        let dir = TempDir::new("firestore");
        let log = dir.path().join("emulator.log");
        let (port, group) = start_on_free_port("firestore emulator", |port| {
            let file = fs::File::create(&log).unwrap();
            let child = Command::new("gcloud")
                .args(["emulators", "firestore", "start", "--quiet"])
                .arg(format!("--host-port=127.0.0.1:{port}"))
                .env("CLOUDSDK_CONFIG", dir.path().join("gcloud"))
                .process_group(0)
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .unwrap_or_else(|e| panic!("gcloud: {e}"));
            // Owned from here: stopped even if the wait below panics.
            let mut group = Group(child);
            // (Its HTTP side keeps connections open despite `Connection: close`: its log says
            // when it is ready.)
            let ready = wait_for(
                "the Firestore emulator to run",
                Duration::from_secs(90),
                || {
                    if let Ok(Some(_)) = group.0.try_wait() {
                        return Some(false);
                    }
                    fs::read_to_string(&log)
                        .unwrap_or_default()
                        .contains("Dev App Server is now running")
                        .then_some(true)
                },
            );
            if ready {
                Some((port, group))
            } else {
                let text = fs::read_to_string(&log).unwrap_or_default();
                assert!(
                    text.contains("already in use"),
                    "the emulator exited:\n{text}"
                );
                None
            }
        });
        FirestoreEmulator {
            port,
            _group: group,
            _dir: dir,
        }
    }
}

/// `plants` on Firestore through `port` (as FIRESTORE_EMULATOR_HOST), with these environment
/// settings (`PLANTS_WRITES`, `PLANTS_INTERVAL_MS`, `PLANTS_TIMEOUT_S`); stdout piped.
pub fn plants_firestore(port: u16, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(repo().join(".venv/bin/python"));
    cmd.arg(repo().join("examples/plants_firestore.py"))
        .env("FIRESTORE_EMULATOR_HOST", format!("127.0.0.1:{port}"))
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}
