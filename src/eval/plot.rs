//! The modality-gap picture: text, audio and bridged embeddings projected to 2-D (the two
//! principal axes of all of them together, so both panels share one frame), before bridging on
//! the left and after on the right, drawn to a PNG.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use tch::{Kind, Tensor};

/// Points to draw: (label, colour, rows [n, dim]) per series, per panel.
pub struct Panel<'a> {
    pub title: String,
    pub series: Vec<(&'a str, RGBColor, &'a Tensor)>,
}

/// The top-2 principal axes of the rows of `all` [n, d]: (mean [d], axes [d, 2]).
pub fn principal_axes(all: &Tensor) -> (Tensor, Tensor) {
    let x = all.to_kind(Kind::Double);
    let mean = x.mean_dim([0i64].as_slice(), true, Kind::Double);
    let c = &x - &mean;
    let cov = c.tr().matmul(&c) / (x.size()[0].max(2) - 1) as f64;
    // eigh returns ascending eigenvalues: the last two columns are the largest.
    let (_, vecs) = cov.linalg_eigh("L");
    let d = vecs.size()[1];
    let axes = vecs.narrow(1, d - 2, 2).flip([1]);
    (mean, axes)
}

/// The rows of `x` [n, d] in the frame of [`principal_axes`]: (axis 1, axis 2) per row.
pub fn project(x: &Tensor, mean: &Tensor, axes: &Tensor) -> Vec<(f64, f64)> {
    let p = (x.to_kind(Kind::Double) - mean).matmul(axes);
    let v = Vec::<f64>::try_from(p.flatten(0, -1)).unwrap_or_default();
    v.chunks_exact(2).map(|c| (c[0], c[1])).collect()
}

/// Draws the panels side by side into `out` (PNG), in one shared 2-D frame.
pub fn draw(out: &Path, heading: &str, panels: &[Panel<'_>]) -> Result<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| anyhow!("the embedded DejaVu font does not load"))?;
    let all: Vec<Tensor> = panels
        .iter()
        .flat_map(|p| {
            p.series
                .iter()
                .map(|(_, _, t)| t.to_device(tch::Device::Cpu))
        })
        .collect();
    let (mean, axes) = principal_axes(&Tensor::cat(&all, 0));
    let projected: Vec<Vec<Vec<(f64, f64)>>> = panels
        .iter()
        .map(|p| {
            p.series
                .iter()
                .map(|(_, _, t)| project(&t.to_device(tch::Device::Cpu), &mean, &axes))
                .collect()
        })
        .collect();
    let pts = projected.iter().flatten().flatten();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    let pad = 0.05 * (x1 - x0).max(y1 - y0).max(1e-6);
    let (x0, x1, y0, y1) = (x0 - pad, x1 + pad, y0 - pad, y1 + pad);

    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let width = 700 * panels.len() as u32;
    let root = BitMapBackend::new(out, (width, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(heading, ("sans-serif", 26))?;
    let areas = root.split_evenly((1, panels.len()));
    for ((panel, area), series) in panels.iter().zip(areas.iter()).zip(&projected) {
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc("principal axis 1")
            .y_desc("principal axis 2")
            .label_style(("sans-serif", 14))
            .draw()?;
        for ((label, colour, _), points) in panel.series.iter().zip(series) {
            let c = *colour;
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&p| Circle::new(p, 3, c.mix(0.55).filled())),
                )?
                .label(format!("{label} ({})", points.len()))
                .legend(move |(x, y)| Circle::new((x + 8, y), 5, c.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// `diffgap plot-gap`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlotGapArgs {
    /// Model directory.
    #[arg(long)]
    pub model: std::path::PathBuf,
    /// Paired embeddings (e.g. the held-out test split) with the model's two modalities.
    #[arg(long)]
    pub pairs: std::path::PathBuf,
    /// Output PNG.
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// Modality bridged (the query side), e.g. text.
    #[arg(long, default_value = "text")]
    pub from: String,
    /// Modality bridged into, e.g. audio.
    #[arg(long, default_value = "audio")]
    pub to: String,
    /// DDIM steps; default: the card's generation steps.
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "auto")]
    pub device: crate::device::DeviceChoice,
}

pub fn plot_gap(args: &PlotGapArgs) -> Result<()> {
    use crate::data::pairs::PairedSet;
    use crate::diffusion::sampler::SampleOptions;
    use crate::model::{artifact, row_seed};

    let device = args.device.resolve().map_err(anyhow::Error::msg)?;
    let model = artifact::load(&args.model, device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let set = PairedSet::load(&args.pairs)?;
    let (src, dst) = (set.modality(&args.from)?, set.modality(&args.to)?);
    let seeds: Vec<u64> = (0..set.rows()).map(|i| row_seed(args.seed, i)).collect();
    let d = &model.card.defaults;
    let opts = SampleOptions {
        steps: args.steps.unwrap_or(d.steps),
        guidance: d.guidance,
        samples: d.samples,
    };
    let bridged = model
        .bridge(src, &args.from, &args.to, &seeds, opts)?
        .to_device(tch::Device::Cpu);
    let blue = RGBColor(31, 119, 180);
    let orange = RGBColor(255, 127, 14);
    let green = RGBColor(44, 160, 44);
    let (from_label, to_label) = (args.from.as_str(), args.to.as_str());
    let bridged_label = format!("{from_label} bridged to {to_label}");
    let panels = [
        Panel {
            title: "before: contrastive embeddings".into(),
            series: vec![(from_label, blue, src), (to_label, orange, dst)],
        },
        Panel {
            title: format!("after: DiffGAP, {} steps", opts.steps),
            series: vec![
                (bridged_label.as_str(), green, &bridged),
                (to_label, orange, dst),
            ],
        },
    ];
    let heading = format!(
        "{}: {} -> {} on {} ({} rows)",
        model.card.name,
        from_label,
        to_label,
        args.pairs
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        set.rows()
    );
    draw(&args.out, &heading, &panels)
}
