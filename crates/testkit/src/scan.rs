//! Searches of this machine's files, for tests that prove something is
//! nowhere it must not be (secrets, keys).

use std::io::Read;
use std::path::Path;

/// Files under `dir` (links not followed) that hold `needle`.
pub fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let finder = memchr::memmem::Finder::new(needle);
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut buf = vec![0u8; 4 << 20];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let Ok(mut file) = std::fs::File::open(&path) else {
                continue;
            };
            // Chunks overlap by the needle's length, so nothing is missed
            // across a boundary.
            let mut kept = 0;
            loop {
                let n = file.read(&mut buf[kept..]).unwrap_or(0);
                if n == 0 {
                    break;
                }
                let end = kept + n;
                if finder.find(&buf[..end]).is_some() {
                    found.push(path.display().to_string());
                    break;
                }
                let tail = needle.len().min(end);
                buf.copy_within(end - tail..end, 0);
                kept = tail;
            }
        }
    }
    found
}
