//! The plot of latency against throughput (SVG), from measured loads or from the load rows of
//! a saved table.

use crate::load::Row;

/// One load's figures, as the plot needs them.
pub(crate) struct Point {
    name: String,
    clients: usize,
    rate: f64,
    p50: f64,
    p99: f64,
}

impl Row {
    pub(crate) fn point(&self) -> Point {
        Point {
            name: self.name.clone(),
            clients: self.clients,
            rate: self.rate(),
            p50: self.percentile_ms(0.50),
            p99: self.percentile_ms(0.99),
        }
    }
}

/// The load rows of a table [`Row::line`] wrote (for re-plotting a saved run).
pub(crate) fn points_of_table(text: &str) -> Vec<Point> {
    text.lines()
        .filter_map(|line| {
            let cells: Vec<&str> =
                line.trim().trim_matches('|').split('|').map(str::trim).collect();
            match cells[..] {
                [name, clients, rate, p50, p99, _, _] => Some(Point {
                    name: name.to_string(),
                    clients: clients.parse().ok()?,
                    rate: rate.parse().ok()?,
                    p50: p50.parse().ok()?,
                    p99: p99.parse().ok()?,
                }),
                _ => None,
            }
        })
        .collect()
}

/// Latency against throughput, as an SVG: p50 (solid) and p99 (dashed) of every load, one
/// series per kind, latency on a log scale.
pub(crate) fn plot(points: &[Point]) -> String {
    let (w, h, left, bottom, top, right) = (840.0, 440.0, 70.0, 50.0, 30.0, 270.0);
    let kinds = [
        "heartbeat (",
        "heartbeat, streamed",
        "durable write (",
        "durable write, clients",
        "linearizable",
    ];
    let loads: Vec<&Point> =
        points.iter().filter(|p| kinds.iter().any(|k| p.name.starts_with(k))).collect();
    let max_rate = loads.iter().map(|p| p.rate).fold(1.0, f64::max) * 1.1;
    let max_ms = loads.iter().map(|p| p.p99).filter(|v| v.is_finite()).fold(1.0, f64::max);
    let (lo, hi) = (0.1f64.log10(), (max_ms * 1.5).log10());
    let x = |rate: f64| left + (w - left - right) * rate / max_rate;
    let y = |ms: f64| h - bottom - (h - bottom - top) * (ms.max(0.1).log10() - lo) / (hi - lo);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let axis = h - bottom;
    svg.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{axis}\" x2=\"{}\" y2=\"{axis}\" stroke=\"black\"/><line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{axis}\" stroke=\"black\"/>\n",
        w - right
    ));
    let mid_y = (axis + top) / 2.0;
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">throughput (ops/s)</text><text x=\"15\" y=\"{mid_y}\" transform=\"rotate(-90 15 {mid_y})\" text-anchor=\"middle\">latency (ms, log scale)</text>\n",
        left + (w - left - right) / 2.0,
        h - 12.0
    ));
    for i in 0..=4 {
        let rate = max_rate * f64::from(i) / 4.0;
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{rate:.0}</text>\n",
            x(rate),
            axis + 16.0
        ));
    }
    let mut tick = 0.1;
    while tick <= max_ms * 1.5 {
        let ty = y(tick);
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{tick}</text><line x1=\"{left}\" y1=\"{ty:.1}\" x2=\"{}\" y2=\"{ty:.1}\" stroke=\"#ddd\"/>\n",
            left - 6.0,
            ty + 4.0,
            w - right
        ));
        tick *= 10.0;
    }
    let colors = ["#2457c5", "#7b3fbf", "#1a7f37", "#6b8e23", "#b35900"];
    for (k, (kind, color)) in kinds.iter().zip(colors).enumerate() {
        let series: Vec<&&Point> = loads.iter().filter(|p| p.name.starts_with(kind)).collect();
        for (p99, dash) in [(false, ""), (true, " stroke-dasharray=\"4 3\"")] {
            let at = |p: &Point| if p99 { p.p99 } else { p.p50 };
            let line: Vec<String> = series
                .iter()
                .filter(|p| at(p).is_finite())
                .map(|p| format!("{:.1},{:.1}", x(p.rate), y(at(p))))
                .collect();
            svg.push_str(&format!(
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\"{dash}/>\n",
                line.join(" ")
            ));
            for p in series.iter().filter(|p| at(p).is_finite()) {
                let (px, py) = (x(p.rate), y(at(p)));
                svg.push_str(&format!(
                    "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"3\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>\n",
                    px + 4.0,
                    py - 4.0,
                    p.clients
                ));
            }
        }
        let ly = top + 20.0 * k as f64;
        let name = series.first().map_or(*kind, |p| p.name.as_str());
        svg.push_str(&format!(
            "<rect x=\"{}\" y=\"{ly}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{name}</text>\n",
            w - right + 10.0,
            w - right + 25.0,
            ly + 9.0
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" font-size=\"10\">solid p50, dashed p99; labels: clients</text>\n</svg>\n",
        w - right + 10.0,
        top + 20.0 * kinds.len() as f64 + 10.0
    ));
    svg
}
