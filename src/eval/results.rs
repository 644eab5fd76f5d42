//! `diffgap results report`: docs/results/README.md, the results page of the default model,
//! from what `scripts/results.sh` has just made (the test-split evaluations) and what building
//! the model left behind (the corpus summary, the small CLAP's record, the stage times and
//! sizes, the model card).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;

use super::report::EvalReport;
use crate::corpus::manifest::Summary as CorpusSummary;
use crate::model::artifact;
use crate::model::card::ModelCard;
use crate::projection::train::ClapRecord;

/// The caption kinds of the test split, each evaluated apart (`test-eval-<kind>.json`).
pub const CAPTION_KINDS: [&str; 2] = ["labels", "described"];
/// The retrieval modes compared by caption kind.
const KIND_MODES: [&str; 5] = ["contrastive", "bridged", "reverse", "fused", "generative"];

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ResultsCommand {
    /// Write <out>/README.md from <out>/test-eval.md, <out>/test-eval-{labels,described}.json,
    /// the small CLAP's record and stage times under --real, the corpus summary and the model
    /// card (run by scripts/results.sh after the evaluations).
    Report(ReportArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// The results folder: read the evaluations from, write README.md to.
    #[arg(long, default_value = "docs/results")]
    pub out: PathBuf,
    /// The real-data build folder (projection/clap.json, stages.tsv).
    #[arg(long, default_value = ".cache/real")]
    pub real: PathBuf,
    /// The corpus folder (summary.json).
    #[arg(long, default_value = ".cache/corpus")]
    pub corpus: PathBuf,
    /// The model evaluated.
    #[arg(long, default_value = "models/default")]
    pub model: PathBuf,
    /// Wall time of the test-split evaluation, in milliseconds.
    #[arg(long)]
    pub eval_ms: u64,
}

impl ResultsCommand {
    pub fn run(&self) -> Result<()> {
        match self {
            Self::Report(args) => {
                let page = render(&Inputs::load(args)?);
                let path = args.out.join("README.md");
                std::fs::write(&path, page)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
        Ok(())
    }
}

/// One line of `stages.tsv`: a build stage, its seconds (`-` when it was cached) and the
/// bytes of its output.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub name: String,
    pub seconds: String,
    pub bytes: u64,
}

/// Parses `stages.tsv` (name, seconds, bytes; tab-separated).
pub fn parse_stages(text: &str) -> Result<Vec<Stage>> {
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [name, seconds, bytes] = fields[..] else {
                bail!("stages.tsv: {line:?} is not name<TAB>seconds<TAB>bytes");
            };
            Ok(Stage {
                name: name.to_owned(),
                seconds: seconds.to_owned(),
                bytes: bytes
                    .parse()
                    .with_context(|| format!("stages.tsv: bytes {bytes:?}"))?,
            })
        })
        .collect()
}

/// The denoiser as the page describes it, from the model card.
#[derive(Debug, Clone, PartialEq)]
pub struct Denoiser {
    pub parameters: i64,
    pub width: i64,
    pub depth: i64,
    /// Epochs run and the best one (absent from a card without a training record).
    pub epochs: Option<(usize, usize)>,
    pub prediction: String,
    pub rank_steps: usize,
    pub steps: usize,
}

impl Denoiser {
    pub fn of(card: &ModelCard) -> Result<Self> {
        let prediction = serde_json::to_value(card.prediction)?;
        Ok(Self {
            parameters: card.parameters,
            width: card.denoiser.width,
            depth: card.denoiser.depth,
            epochs: card.training.as_ref().map(|t| (t.epochs_run, t.best_epoch)),
            prediction: prediction.as_str().unwrap_or_default().to_owned(),
            rank_steps: card.defaults.rank_steps,
            steps: card.defaults.steps,
        })
    }
}

/// Everything the page is made of.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub corpus: CorpusSummary,
    pub clap: ClapRecord,
    /// `diffgap eval`'s table on the whole test split, as printed.
    pub evaluation: String,
    /// The evaluation by caption kind, in [`CAPTION_KINDS`] order.
    pub by_kind: Vec<(String, EvalReport)>,
    pub stages: Vec<Stage>,
    pub eval_seconds: f64,
    pub denoiser: Denoiser,
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

impl Inputs {
    pub fn load(args: &ReportArgs) -> Result<Self> {
        let by_kind = CAPTION_KINDS
            .iter()
            .map(|k| {
                let path = args.out.join(format!("test-eval-{k}.json"));
                Ok((k.to_string(), read_json(&path)?))
            })
            .collect::<Result<_>>()?;
        let card = artifact::read_card(&args.model)?;
        Ok(Self {
            corpus: read_json(&args.corpus.join("summary.json"))?,
            clap: read_json(&args.real.join("projection/clap.json"))?,
            evaluation: read(&args.out.join("test-eval.md"))?,
            by_kind,
            stages: parse_stages(&read(&args.real.join("stages.tsv"))?)?,
            eval_seconds: args.eval_ms as f64 / 1e3,
            denoiser: Denoiser::of(&card)?,
        })
    }
}

/// `n` with a comma between each group of three digits.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    match n < 0 {
        true => format!("-{out}"),
        false => out,
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

const INTRO: &str = "\
# Results on real sounds (the default model)

Made by `scripts/results.sh` (it builds the default model first if needed). Everything
below is measured on the **held-out test split** of the real corpus: sound identities never
seen in training or validation. **The captions are label-like** (\"the sound of a Cello\",
\"horse canter\", \"phone incoming call\"), except Tux Paint's one-line descriptions (\"A frog.\"),
which are all in the test split as an out-of-distribution set; they are not AudioCaps-style
sentences, and the space is a small CLAP trained here, not LAION-CLAP.
";

/// The whole page.
pub fn render(i: &Inputs) -> String {
    let mut o = String::from(INTRO);
    corpus_section(&mut o, &i.corpus);
    clap_section(&mut o, &i.clap);
    evaluation_section(&mut o, &i.evaluation);
    by_kind_section(&mut o, &i.by_kind);
    stages_section(&mut o, &i.stages, i.eval_seconds, &i.denoiser);
    o
}

fn corpus_section(o: &mut String, s: &CorpusSummary) {
    o.push_str("\n## The corpus\n\n");
    o.push_str("| source | train clips/identities | val | test |\n|---|---|---|---|\n");
    for (source, clips) in &s.clips {
        let ids = s.identities.get(source);
        let cell = |split: &str| {
            let ids = ids.and_then(|m| m.get(split)).copied().unwrap_or(0);
            format!("{}/{ids}", clips.get(split).copied().unwrap_or(0))
        };
        let _ = writeln!(
            o,
            "| {source} | {} | {} | {} |",
            cell("train"),
            cell("val"),
            cell("test")
        );
    }
    let _ = writeln!(
        o,
        "| all | {} clips, {} identities, {:.0} s of audio | | |",
        s.total_clips, s.total_identities, s.total_seconds
    );
}

fn clap_section(o: &mut String, c: &ClapRecord) {
    o.push_str("\n## The small CLAP (projection heads on frozen MiniLM and aisfx)\n\n");
    let _ = writeln!(
        o,
        "Space dimension {}, learned temperature {:.4}, {} epochs (best {}).\n",
        c.dim, c.temperature, c.epochs_run, c.best_epoch
    );
    o.push_str("| split, direction | R@1 | R@5 | R@10 | mAP@10 | queries |\n");
    o.push_str("|---|---|---|---|---|---|\n");
    for (name, m) in [
        ("val, text->audio", &c.val_text_to_audio),
        ("val, audio->text", &c.val_audio_to_text),
        ("test, text->audio", &c.test_text_to_audio),
        ("test, audio->text", &c.test_audio_to_text),
    ] {
        let _ = writeln!(
            o,
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {} |",
            m.r1, m.r5, m.r10, m.map10, m.queries
        );
    }
}

fn evaluation_section(o: &mut String, evaluation: &str) {
    o.push_str("\n## DiffGAP on the test split\n\n");
    o.push_str(
        "`diffgap eval --model models/default --pairs .cache/real/projection/pairs-test.safetensors`\n\
         (queries are deduplicated per sound identity; a candidate is relevant when it is a clip of\n\
         the query's identity):\n\n",
    );
    // The eval's first line describes the data and options: kept, as code.
    let (first, rest) = evaluation
        .trim()
        .split_once('\n')
        .unwrap_or((evaluation.trim(), ""));
    let _ = writeln!(o, "`{first}`\n{rest}");
}

fn by_kind_section(o: &mut String, by_kind: &[(String, EvalReport)]) {
    o.push_str(
        "\n### By caption kind\n\n\
         The same model and protocol on the two parts of the test split: sounds with label-like\n\
         captions (Wesnoth, freedesktop, SoundFont presets: the kind of caption trained on) and Tux\n\
         Paint's sounds with human-written one-line descriptions (out of distribution). R@1 / mAP@10:\n\n",
    );
    let (mut header, mut rule) = ("| mode |".to_owned(), "|---|".to_owned());
    for (kind, d) in by_kind {
        for dir in &d.directions {
            let _ = write!(
                header,
                " {kind}: {}->{} ({} queries) |",
                dir.query, dir.candidate, dir.queries
            );
            rule.push_str("---|");
        }
    }
    let _ = writeln!(o, "{header}\n{rule}");
    for mode in KIND_MODES {
        let mut row = format!("| {mode} |");
        for dir in by_kind.iter().flat_map(|(_, d)| &d.directions) {
            let cell = match dir.modes.get(mode) {
                Some(m) => format!(" {:.3} / {:.3} |", m.r1, m.map10),
                None => " - |".to_owned(),
            };
            row.push_str(&cell);
        }
        let _ = writeln!(o, "{row}");
    }
    o.push_str("\n| gap measure (test part) | before | after bridging |\n|---|---|---|\n");
    for (kind, d) in by_kind {
        for g in &d.gap {
            let pair = format!("{kind}, {} -> {}", g.source, g.target);
            let _ = writeln!(
                o,
                "| {pair}: Frechet distance | {:.4} | {:.4} |",
                g.frechet_before, g.frechet_after
            );
            let _ = writeln!(
                o,
                "| {pair}: cosine to true partner | {:.4} | {:.4} |",
                g.paired_cosine_before, g.paired_cosine_after
            );
        }
    }
    o.push_str(
        "\n![the modality gap before and after bridging](gap.png)\n\n\
         `gap.png` (`diffgap plot-gap`): test-split text, audio and text bridged to audio, on the\n\
         two principal axes of all of them together.\n",
    );
}

fn stages_section(o: &mut String, stages: &[Stage], eval_seconds: f64, d: &Denoiser) {
    o.push_str("\n## Stages: time and size\n\n");
    o.push_str("| stage | seconds (2 cores) | output size |\n|---|---|---|\n");
    for s in stages {
        let seconds = match s.seconds.as_str() {
            "-" => "(cached)",
            secs => secs,
        };
        let _ = writeln!(o, "| {} | {seconds} | {} |", s.name, megabytes(s.bytes));
    }
    let _ = writeln!(o, "| eval (test split) | {eval_seconds:.1} | |");
    let (epochs, best) = d.epochs.map_or(("?".to_owned(), "?".to_owned()), |(e, b)| {
        (e.to_string(), b.to_string())
    });
    let _ = writeln!(
        o,
        "\nDiffGAP denoiser: {} parameters, width {}, depth {}, {epochs} epochs (best {best}), \
         prediction {}, ranking steps {}, generation steps {}.",
        thousands(d.parameters),
        d.width,
        d.depth,
        d.prediction,
        d.rank_steps,
        d.steps
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(7_354_368), "7,354,368");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(-12_345), "-12,345");
    }

    #[test]
    fn stages_parse_and_cached_ones_say_so() {
        let stages = parse_stages("encoders\t2.2\t110994876\ncorpus\t-\t455632233\n").expect("ok");
        assert_eq!(stages.len(), 2);
        assert_eq!(stages[1].seconds, "-");
        let mut o = String::new();
        let d = Denoiser {
            parameters: 7_354_368,
            width: 512,
            depth: 3,
            epochs: None,
            prediction: "v".into(),
            rank_steps: 10,
            steps: 10,
        };
        stages_section(&mut o, &stages, 13.31, &d);
        assert!(o.contains("| encoders | 2.2 | 111.0 MB |\n"), "{o}");
        assert!(o.contains("| corpus | (cached) | 455.6 MB |\n"), "{o}");
        assert!(o.contains("| eval (test split) | 13.3 | |\n"), "{o}");
        assert!(
            o.contains("7,354,368 parameters, width 512, depth 3, ? epochs (best ?), prediction v"),
            "{o}"
        );
        assert!(parse_stages("encoders\t2.2\n").is_err());
        assert!(parse_stages("encoders\t2.2\tmany\n").is_err());
    }

    #[test]
    fn the_first_line_of_the_evaluation_becomes_code() {
        let mut o = String::new();
        evaluation_section(&mut o, "data x, 3 rows\n\n| kind | mode |\n");
        assert!(
            o.ends_with("`data x, 3 rows`\n\n| kind | mode |\n"),
            "{o:?}"
        );
    }

    /// The committed results page against its committed inputs: the parts made from files in
    /// the repository come out as the page has them.
    #[test]
    fn the_committed_page_has_the_sections_of_its_committed_evaluations() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/results");
        let page = read(&dir.join("README.md")).expect("the committed page");
        let by_kind: Vec<(String, EvalReport)> = CAPTION_KINDS
            .iter()
            .map(|k| {
                let path = dir.join(format!("test-eval-{k}.json"));
                (k.to_string(), read_json(&path).expect("a committed report"))
            })
            .collect();
        let mut o = String::new();
        by_kind_section(&mut o, &by_kind);
        assert!(page.contains(&o), "{o}");
        let mut o = String::new();
        evaluation_section(&mut o, &read(&dir.join("test-eval.md")).expect("committed"));
        assert!(page.contains(&o), "{o}");
    }
}
