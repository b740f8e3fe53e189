import Foundation

/// Monotonic wall clock in seconds.
func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// CPU time of this process in seconds.
func cpuTime() -> Double {
    var ru = rusage()
    getrusage(RUSAGE_SELF.rawValue, &ru)
    return Double(ru.ru_utime.tv_sec) + Double(ru.ru_utime.tv_usec) * 1e-6 + Double(ru.ru_stime.tv_sec) + Double(ru.ru_stime.tv_usec) * 1e-6
}

/// Peak resident set size of this process in MiB.
func peakRSSMiB() -> Double {
    var ru = rusage()
    getrusage(RUSAGE_SELF.rawValue, &ru)
    return Double(ru.ru_maxrss) / 1024
}

/// Current resident set size in MiB (from /proc).
func currentRSSMiB() -> Double {
    guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let parts = s.split(separator: " ")
    guard parts.count > 1, let pages = Double(parts[1]) else { return 0 }
    return pages * Double(sysconf(Int32(_SC_PAGESIZE))) / 1048576
}

/// Resets the kernel's peak-RSS counter (VmHWM) so that a phase's own peak can be read.
func resetPeakRSS() {
    try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)
}

/// Peak RSS since the last reset, from /proc/self/status (VmHWM), in MiB.
func hwmMiB() -> Double {
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return peakRSSMiB() }
    for line in s.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        // "VmHWM:\t%8lu kB": from 10^7 kB (9.5 GiB) on no space follows the tab, so split on both.
        let kb = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { Double($0) }.first ?? 0
        return kb / 1024
    }
    return peakRSSMiB()
}

/// Median and minimum time of `body` over at least `minRuns` runs and `minSeconds` in total, after one
/// warm-up call. The machine is shared, so the minimum is the steadier estimate of the intrinsic cost.
func measureBoth(minRuns: Int = 5, minSeconds: Double = 0.5, _ body: () -> Void) -> (median: Double, min: Double) {
    body()
    var times: [Double] = []
    let start = now()
    while times.count < minRuns || now() - start < minSeconds {
        let t0 = now()
        body()
        times.append(now() - t0)
        if times.count > 100_000 { break }
    }
    times.sort()
    return (times[times.count / 2], times[0])
}

func measure(minRuns: Int = 5, minSeconds: Double = 0.5, _ body: () -> Void) -> Double {
    measureBoth(minRuns: minRuns, minSeconds: minSeconds, body).median
}

func fmt(_ x: Double, _ digits: Int = 3) -> String { String(format: "%.\(digits)g", x) }

func fmtTime(_ s: Double) -> String {
    if s < 1e-6 { return String(format: "%.1f ns", s * 1e9) }
    if s < 1e-3 { return String(format: "%.2f µs", s * 1e6) }
    if s < 1 { return String(format: "%.2f ms", s * 1e3) }
    return String(format: "%.3f s", s)
}

/// Left-justified to `width` columns.
func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s : s + String(repeating: " ", count: width - s.count) }
