//! A small CLAP built from real parts: frozen pretrained encoders (MiniLM for text, aisfx for
//! audio) and two trained projection heads into a shared space. It gives DiffGAP a real
//! contrastive space with a real modality gap when no CLAP checkpoint is reachable.
//!
//! - the projection heads themselves are a runtime piece: [`crate::encoders::head`];
//! - [`raw`]: the frozen encoders' outputs on a corpus (the training input), audio cached by
//!   clip content ([`cache`]);
//! - [`train`]: symmetric multi-positive InfoNCE with a learned temperature.

pub mod cache;
pub mod raw;
pub mod train;

use anyhow::Result;

/// `diffgap projection ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ProjectionCommand {
    /// Run a corpus (`diffgap corpus build`) through the frozen encoders: one raw file of
    /// text and audio encoder outputs with sound identities and splits.
    Embed(raw::EmbedCorpusConfig),
    /// Train the projection heads (symmetric InfoNCE, learned temperature) and write the
    /// splits projected into the new space as paired files.
    Train(train::ClapConfig),
}

impl ProjectionCommand {
    pub fn run(&self) -> Result<()> {
        match self {
            ProjectionCommand::Embed(cfg) => {
                let n = raw::embed_corpus(cfg)?;
                println!("embedded {n} clips into {}", cfg.out.display());
            }
            ProjectionCommand::Train(cfg) => {
                let r = train::train(cfg)?;
                println!(
                    "projection heads: {} epochs (best {}), temperature {:.4}, {:.1} s",
                    r.epochs_run, r.best_epoch, r.temperature, r.seconds
                );
                for (name, m) in [
                    ("val text->audio", &r.val_text_to_audio),
                    ("val audio->text", &r.val_audio_to_text),
                    ("test text->audio", &r.test_text_to_audio),
                    ("test audio->text", &r.test_audio_to_text),
                ] {
                    println!(
                        "  {name:<17} R@1 {:.3}  R@5 {:.3}  R@10 {:.3}  mAP@10 {:.3}  ({} queries)",
                        m.r1, m.r5, m.r10, m.map10, m.queries
                    );
                }
            }
        }
        Ok(())
    }
}
