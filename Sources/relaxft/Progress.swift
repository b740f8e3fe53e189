import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Progress of a long phase on standard error: on a terminal one live line, redrawn in place; when standard
/// error is redirected (a log file, a batch job), a line at most every `interval` seconds plus the last one,
/// each written at once, so that a log shows where a run is.
final class ProgressLine {
    let enabled: Bool
    let tty = isatty(2) != 0
    let interval: Double
    private var last = Date.distantPast
    private var shown = false

    init(enabled: Bool = true, interval: Double = 30) {
        self.enabled = enabled
        self.interval = interval
    }

    /// Shows `text`; `final` marks the last update of a phase (always written).
    func update(_ text: String, final: Bool = false) {
        guard enabled else { return }
        if tty {
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + text + (final ? "\n" : "")).utf8))
            shown = !final
        } else if final || Date().timeIntervalSince(last) >= interval {
            last = Date()
            FileHandle.standardError.write(Data((text + "\n").utf8))
        }
    }

    /// Clears a live line before other output goes to the terminal.
    func clear() {
        guard tty && shown else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
        shown = false
    }
}

/// `12s`, `3m05s`, `1h02m`; `?` when unknown.
func formatDuration(_ s: Double?) -> String {
    guard let s, s.isFinite, s >= 0 else { return "?" }
    let t = Int(s.rounded())
    if t >= 3600 { return String(format: "%dh%02dm", t / 3600, (t % 3600) / 60) }
    if t >= 60 { return String(format: "%dm%02ds", t / 60, t % 60) }
    return "\(t)s"
}

/// A log line on standard output (or standard error), flushed at once: standard output is block-buffered
/// when redirected to a file, and a log that lags behind the run is no log.
func emit(_ line: String, toStandardError: Bool = false) {
    if toStandardError {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    } else {
        print(line)
        fflush(nil)
    }
}
