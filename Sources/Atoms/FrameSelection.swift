/// Frames picked by a Python index or slice, as `ase convert -n` and ASE's `index` take them: "3", "-1",
/// "0:10:2", "::-1", ":5".
public struct FrameSelection: Sendable, Equatable {
    public var index: Int?
    public var start: Int?
    public var stop: Int?
    public var step: Int?

    /// All frames.
    public static let all = FrameSelection(index: nil, start: nil, stop: nil, step: nil)

    /// Parses an index or a slice; nil when the text is neither (or the step is 0, as Python refuses it).
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map { $0.trimmed }
        func int(_ s: Substring) -> Int?? { s.isEmpty ? .some(nil) : Int(s).map { .some($0) } ?? nil }
        switch parts.count {
        case 1:
            guard let i = Int(parts[0]) else { return nil }
            self.init(index: i, start: nil, stop: nil, step: nil)
        case 2, 3:
            guard let a = int(parts[0]), let b = int(parts[1]), let c = parts.count == 3 ? int(parts[2]) : .some(nil), c != 0 else { return nil }
            self.init(index: nil, start: a, stop: b, step: c)
        default:
            return nil
        }
    }

    init(index: Int?, start: Int?, stop: Int?, step: Int?) {
        self.index = index
        self.start = start
        self.stop = stop
        self.step = step
    }

    /// The selected frame indices among `count` frames, in order; nil when a single index is out of range.
    public func indices(count: Int) -> [Int]? {
        if let index {
            let i = index < 0 ? index + count : index
            return (0..<count).contains(i) ? [i] : nil
        }
        let step = self.step ?? 1
        // Python's PySlice_AdjustIndices.
        func adjust(_ v: Int?, default d: Int) -> Int {
            guard var v else { return d }
            if v < 0 {
                v += count
                if v < 0 { v = step < 0 ? -1 : 0 }
            } else if v >= count {
                v = step < 0 ? count - 1 : count
            }
            return v
        }
        let lo = adjust(start, default: step < 0 ? count - 1 : 0)
        let hi = adjust(stop, default: step < 0 ? -1 : count)
        return Array(stride(from: lo, to: hi, by: step))
    }
}
