//! The manifest (one JSON object per clip, `manifest.jsonl`) and the summary (counts per source
//! and split, and of everything left out), printed as a table and written as `summary.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::candidate::RenderSpec;
use super::candidate::Source;
use super::split::Split;

/// One clip of the corpus.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    pub clip_id: String,
    /// The WAV file, relative to the corpus folder: `clips/<clip_id>.wav` (mono, 32-bit float,
    /// 44.1 kHz, peak-normalised).
    pub file: String,
    /// The group key: variants of one sound share it; the split is decided on it.
    pub identity: String,
    pub caption: String,
    pub split: Split,
    pub source: Source,
    pub package: String,
    pub version: String,
    /// The file inside the package (the SoundFont for renders).
    pub package_path: String,
    /// Short licence name from the package's debian/copyright.
    pub licence: String,
    /// The note rendered, for SoundFont clips.
    pub render: Option<RenderSpec>,
    pub sample_rate: u32,
    pub samples: usize,
    pub duration_s: f64,
    /// The audio file's own rate and channels (renders: the synthesiser's rate, 2 channels).
    pub source_sample_rate: u32,
    pub source_channels: usize,
    /// Whether the clip was cut at the length cap.
    pub capped: bool,
    /// Peak amplitude before peak normalisation.
    pub peak: f32,
    /// sha256 of the written WAV file.
    pub sha256: String,
}

/// Clips and identities per (source, split), and what was left out per source and reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub clips: BTreeMap<String, BTreeMap<String, usize>>,
    pub identities: BTreeMap<String, BTreeMap<String, usize>>,
    /// reason -> source -> count.
    pub dropped: BTreeMap<String, BTreeMap<String, usize>>,
    pub total_clips: usize,
    pub total_identities: usize,
    pub total_seconds: f64,
}

impl Summary {
    pub fn from_records(records: &[Record]) -> Summary {
        let mut s = Summary::default();
        let mut ids: BTreeMap<(String, String), BTreeSet<&str>> = BTreeMap::new();
        let mut all_ids = BTreeSet::new();
        for r in records {
            let (src, split) = (r.source_name(), r.split.name().to_string());
            *s.clips
                .entry(src.clone())
                .or_default()
                .entry(split.clone())
                .or_default() += 1;
            ids.entry((src, split)).or_default().insert(&r.identity);
            all_ids.insert(&r.identity);
            s.total_seconds += r.duration_s;
        }
        for ((src, split), set) in ids {
            s.identities
                .entry(src)
                .or_default()
                .insert(split, set.len());
        }
        s.total_clips = records.len();
        s.total_identities = all_ids.len();
        s.total_seconds = (s.total_seconds * 1000.0).round() / 1000.0;
        s
    }

    pub fn drop(&mut self, reason: &str, source: &Source, n: usize) {
        if n > 0 {
            *self
                .dropped
                .entry(reason.to_string())
                .or_default()
                .entry(source.name().to_string())
                .or_default() += n;
        }
    }

    /// The table printed at the end of a build.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "{:<12} {:>14} {:>14} {:>14} {:>14}",
            "source", "train", "val", "test", "all"
        );
        let _ = writeln!(
            t,
            "{:<12} {:>14} {:>14} {:>14} {:>14}",
            "", "clips/ids", "clips/ids", "clips/ids", "clips/ids"
        );
        let mut col_clips = [0usize; 4];
        let mut col_ids = [0usize; 4];
        for (name, clips) in &self.clips {
            let ids = self.identities.get(name);
            let mut row = format!("{name:<12}");
            let (mut rc, mut ri) = (0, 0);
            for (i, split) in Split::ALL.iter().enumerate() {
                let c = clips.get(split.name()).copied().unwrap_or(0);
                let n = ids.and_then(|m| m.get(split.name())).copied().unwrap_or(0);
                let _ = write!(row, " {:>14}", format!("{c}/{n}"));
                rc += c;
                ri += n;
                col_clips[i] += c;
                col_ids[i] += n;
            }
            col_clips[3] += rc;
            col_ids[3] += ri;
            let _ = writeln!(t, "{row} {:>14}", format!("{rc}/{ri}"));
        }
        let mut row = format!("{:<12}", "all");
        for i in 0..4 {
            let _ = write!(row, " {:>14}", format!("{}/{}", col_clips[i], col_ids[i]));
        }
        let _ = writeln!(t, "{row}");
        let _ = writeln!(t, "audio: {:.1} s in all", self.total_seconds);
        if !self.dropped.is_empty() {
            let _ = writeln!(t, "left out:");
            for (reason, per) in &self.dropped {
                let list: Vec<String> = per.iter().map(|(s, n)| format!("{s} {n}")).collect();
                let _ = writeln!(t, "  {reason}: {}", list.join(", "));
            }
        }
        t
    }
}

impl Record {
    fn source_name(&self) -> String {
        self.source.name().to_string()
    }
}
