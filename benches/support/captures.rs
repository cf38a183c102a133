//! The real captures (integration/captures) as one AMI stream, for the benches that read them.

pub const CAPTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/integration/captures");

/// Every capture as one stream: one banner, then the packets of every received and sent file.
pub fn all_captures() -> Vec<u8> {
    let mut names: Vec<_> = std::fs::read_dir(CAPTURES)
        .expect("captures directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    names.sort();
    let mut stream = b"Asterisk Call Manager/11.0.0\r\n".to_vec();
    for path in names {
        let bytes = std::fs::read(&path).expect("capture");
        // Received captures start with the banner line; only the first is kept.
        let skip = if path.to_string_lossy().ends_with(".sent.txt") {
            0
        } else {
            bytes.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1)
        };
        stream.extend_from_slice(&bytes[skip..]);
    }
    stream
}
