//! Observations as lines on stdout: aligned text (optionally coloured) or one JSON object each
//! (docs/trace-json.md), with the counts for the summary line.
//!
//! Lines are buffered and written when the caller has handed over a batch ([`Lines::flush`],
//! called once per ring-buffer drain): one `write(2)` per batch instead of one per line, which
//! is what let a SYN flood's 480k events/s outrun the reader (BENCHMARKS.md, section 2).

use std::{
    io::{BufWriter, StdoutLock, Write},
    ops::ControlFlow,
};

use observer_core::model::Observation;

use super::Sink;
use crate::{cli::OutputFormat, trace::format};

/// Bytes of lines held before they are written even within a batch.
const BUFFER_BYTES: usize = 64 * 1024;

/// Text or JSON lines on stdout.
pub struct Lines {
    output: OutputFormat,
    colour: bool,
    out: BufWriter<StdoutLock<'static>>,
    /// The JSON object being written (its allocation reused from line to line).
    json: Vec<u8>,
    /// A write failed (stdout closed, or an error kept in `failure`): nothing more is written.
    broken: bool,
    /// What was printed, by verdict.
    pub summary: format::Summary,
    failure: Option<anyhow::Error>,
}

impl Lines {
    /// Writes the text header (text output) and returns the sink.
    pub fn new(output: OutputFormat, colour: bool) -> anyhow::Result<Self> {
        let mut out = BufWriter::with_capacity(BUFFER_BYTES, std::io::stdout().lock());
        if output == OutputFormat::Text {
            writeln!(out, "{}", format::TEXT_HEADER)?;
            out.flush()?;
        }
        Ok(Self {
            output,
            colour,
            out,
            json: Vec::with_capacity(1024),
            broken: false,
            summary: format::Summary::default(),
            failure: None,
        })
    }

    /// Writes the lines held so far. Call it when a batch of observations has been handed over
    /// (and before waiting for more), so that a line is never held back while observer waits.
    /// `Break` once stdout is gone or failed (the error, if any, is returned by `finish`).
    pub fn flush(&mut self) -> ControlFlow<()> {
        if self.broken {
            return ControlFlow::Break(());
        }
        match self.out.flush() {
            Ok(()) => ControlFlow::Continue(()),
            Err(err) => self.fail(err),
        }
    }

    /// A closed pipe (e.g. `| head`) ends the output quietly; any other error is kept.
    fn fail(&mut self, err: std::io::Error) -> ControlFlow<()> {
        if err.kind() != std::io::ErrorKind::BrokenPipe {
            self.failure = Some(err.into());
        }
        self.broken = true;
        ControlFlow::Break(())
    }

    /// Text: the summary ends the output; JSON: stdout stays one event per line (stderr).
    pub fn summary_line(&mut self, lost: u64, not_shown: u64, not_attributed: u64) {
        let line = self.summary.line(lost, not_shown, not_attributed);
        let _ = self.flush();
        match self.output {
            OutputFormat::Text => {
                if !self.broken {
                    let _ = writeln!(self.out, "{line}").and_then(|()| self.out.flush());
                }
            }
            OutputFormat::Json => eprintln!("{line}"),
        }
    }
}

impl Sink for Lines {
    fn observation(&mut self, o: &Observation) -> ControlFlow<()> {
        if self.broken {
            return ControlFlow::Break(());
        }
        let written = match self.output {
            OutputFormat::Text => {
                let line = format::text_line(o);
                let line = if self.colour { format::colourize(o, line) } else { line };
                writeln!(self.out, "{line}")
            }
            OutputFormat::Json => {
                format::write_json(o, &mut self.json);
                self.json.push(b'\n');
                self.out.write_all(&self.json)
            }
        };
        if let Err(err) = written {
            return self.fail(err);
        }
        self.summary.add(o);
        ControlFlow::Continue(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        let _ = self.flush();
        self.failure.take().map_or(Ok(()), Err)
    }
}
