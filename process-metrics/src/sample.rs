//! One reading of the process' figures from `/proc`, each figure on its own: a file that
//! cannot be read or parsed leaves out only the figures it carries.

use std::path::PathBuf;

use crate::proc_files::{self, TICKS_PER_SECOND};

/// Where the figures are read: a `/proc` mount and the process' directory in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcDirs {
    /// The mount: `/proc/stat` has the boot time.
    pub proc: PathBuf,
    /// The process: `/proc/self`.
    pub process: PathBuf,
}

impl ProcDirs {
    /// The calling process in the system's `/proc`.
    pub fn this_process() -> Self {
        Self {
            proc: PathBuf::from("/proc"),
            process: PathBuf::from("/proc/self"),
        }
    }

    pub fn read(&self) -> ProcessSample {
        let stat = self.file("stat").and_then(|text| proc_files::stat(&text));
        let status = self.file("status");
        let memory = |key| {
            status
                .as_deref()
                .and_then(|text| proc_files::status_bytes(text, key))
        };
        let boot_time = std::fs::read_to_string(self.proc.join("stat"))
            .ok()
            .and_then(|text| proc_files::boot_time(&text));
        ProcessSample {
            cpu_seconds: stat.map(|stat| stat.cpu_ticks as f64 / TICKS_PER_SECOND),
            resident_bytes: memory("VmRSS"),
            virtual_bytes: memory("VmSize"),
            open_fds: self.open_fds(),
            max_fds: self
                .file("limits")
                .and_then(|text| proc_files::max_open_files(&text)),
            start_time_seconds: stat
                .zip(boot_time)
                .map(|(stat, boot)| boot as f64 + stat.start_ticks as f64 / TICKS_PER_SECOND),
        }
    }

    fn file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.process.join(name)).ok()
    }

    /// The entries of `fd/`, the directory handle that lists them included (as Prometheus'
    /// own clients count it).
    fn open_fds(&self) -> Option<u64> {
        let entries = std::fs::read_dir(self.process.join("fd")).ok()?;
        let mut count = 0;
        for entry in entries {
            entry.ok()?;
            count += 1;
        }
        Some(count)
    }
}

/// The figures of one reading; `None` for those that could not be read.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessSample {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;

    #[test]
    fn this_process_has_every_figure_and_sane_values() {
        let sample = ProcDirs::this_process().read();
        let resident = sample.resident_bytes.expect("resident memory");
        assert!(resident > 0);
        assert!(sample.virtual_bytes.expect("virtual memory") >= resident);
        assert!(sample.cpu_seconds.expect("cpu time") >= 0.0);
        let open = sample.open_fds.expect("open fds");
        assert!(open >= 3, "stdin, stdout, stderr at least: {open}");
        assert!(sample.max_fds.expect("the open files limit") >= open);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = sample.start_time_seconds.expect("start time");
        assert!(
            (now - 3600.0..=now + 1.0).contains(&started),
            "started at {started}, now is {now}"
        );
    }

    #[test]
    fn without_proc_there_is_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = ProcDirs {
            proc: dir.path().join("proc"),
            process: dir.path().join("proc/self"),
        };
        assert_eq!(missing.read(), ProcessSample::default());
    }

    /// A process directory with a garbled `stat` and no `fd/`: what those carry is left out,
    /// the rest is read.
    #[test]
    fn a_file_that_cannot_be_parsed_leaves_out_only_its_figures() {
        let dir = tempfile::tempdir().unwrap();
        let process = dir.path().join("4242");
        std::fs::create_dir(&process).unwrap();
        std::fs::write(dir.path().join("stat"), "btime 1796308373\n").unwrap();
        std::fs::write(process.join("stat"), "4242 (sluice) R 1 2\n").unwrap();
        std::fs::write(process.join("status"), "VmSize:\t 8 kB\nVmRSS:\t 4 kB\n").unwrap();
        std::fs::write(process.join("limits"), "Max open files  64  128  files\n").unwrap();
        let dirs = ProcDirs {
            proc: dir.path().to_owned(),
            process,
        };
        assert_eq!(
            dirs.read(),
            ProcessSample {
                resident_bytes: Some(4096),
                virtual_bytes: Some(8192),
                max_fds: Some(64),
                ..ProcessSample::default()
            }
        );
    }

    #[test]
    fn start_time_is_boot_time_plus_the_ticks_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let process = dir.path().join("4242");
        std::fs::create_dir_all(process.join("fd")).unwrap();
        std::fs::write(dir.path().join("stat"), "cpu 1 2\nbtime 1000\n").unwrap();
        let stat = "4242 (sluice) S 1 4242 4242 0 -1 0 0 0 0 0 150 100 0 0 20 0 9 0 12345 0 0\n";
        std::fs::write(process.join("stat"), stat).unwrap();
        for fd in ["0", "1"] {
            std::fs::write(process.join("fd").join(fd), "").unwrap();
        }
        let sample = ProcDirs {
            proc: dir.path().to_owned(),
            process,
        }
        .read();
        assert_eq!(sample.cpu_seconds, Some(2.5));
        let started = sample.start_time_seconds.expect("start time");
        assert!((started - 1123.45).abs() < 1e-9, "{started}");
        assert_eq!(sample.open_fds, Some(2));
        assert_eq!(sample.resident_bytes, None, "no status file");
    }
}
