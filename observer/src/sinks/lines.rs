//! Observations as lines on stdout: aligned text (optionally coloured) or one JSON object each
//! (docs/trace-json.md), with the counts for the summary line.

use std::{
    io::{StdoutLock, Write},
    ops::ControlFlow,
};

use observer_core::model::Observation;

use super::Sink;
use crate::{cli::OutputFormat, trace::format};

/// Text or JSON lines on stdout.
pub struct Lines {
    output: OutputFormat,
    colour: bool,
    out: StdoutLock<'static>,
    /// What was printed, by verdict.
    pub summary: format::Summary,
    failure: Option<anyhow::Error>,
}

impl Lines {
    /// Writes the text header (text output) and returns the sink.
    pub fn new(output: OutputFormat, colour: bool) -> anyhow::Result<Self> {
        let mut out = std::io::stdout().lock();
        if output == OutputFormat::Text {
            writeln!(out, "{}", format::TEXT_HEADER)?;
        }
        Ok(Self { output, colour, out, summary: format::Summary::default(), failure: None })
    }

    /// Text: the summary ends the output; JSON: stdout stays one event per line (stderr).
    pub fn summary_line(&mut self, lost: u64, not_shown: u64, not_attributed: u64) {
        let line = self.summary.line(lost, not_shown, not_attributed);
        match self.output {
            OutputFormat::Text => {
                let _ = writeln!(self.out, "{line}");
            }
            OutputFormat::Json => eprintln!("{line}"),
        }
    }
}

impl Sink for Lines {
    fn observation(&mut self, o: &Observation) -> ControlFlow<()> {
        let line = match self.output {
            OutputFormat::Text => format::text_line(o),
            OutputFormat::Json => format::json_line(o),
        };
        let line = if self.colour { format::colourize(o, line) } else { line };
        if let Err(err) = writeln!(self.out, "{line}").and_then(|()| self.out.flush()) {
            // A closed pipe (e.g. `| head`) ends the output quietly.
            if err.kind() != std::io::ErrorKind::BrokenPipe {
                self.failure = Some(err.into());
            }
            return ControlFlow::Break(());
        }
        self.summary.add(o);
        ControlFlow::Continue(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.failure.take().map_or(Ok(()), Err)
    }
}
