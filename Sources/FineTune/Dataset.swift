import Atoms
import Foundation
import Potentials
import Tape

public struct DatasetError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Relaxation datasets: each frame is the initial structure with the reference-relaxed positions in a per-atom
/// column `pos_relaxed` (optional `energy_relaxed`; `cell_relaxed` must equal the cell when present, since
/// relaxations here keep the cell fixed), or two files matched frame by frame (initial, target).
public enum RelaxationDataset {
    public static func examples(from frames: [Structure], source: String) throws -> [RelaxationExample] {
        try frames.enumerated().map { k, s in
            guard case .doubles(let t)? = s.arrays["pos_relaxed"], t.shape == [s.count, 3] else {
                throw DatasetError(message: "\(source): frame \(k) has no per-atom column pos_relaxed:R:3 (the DFT-relaxed positions)")
            }
            guard t.isFinite else { throw DatasetError(message: "\(source): frame \(k): pos_relaxed has a non-finite value") }
            if let c = s.info["cell_relaxed"]?.doublesValue {
                guard c.count == 9, Tensor(shape: [3, 3], c).maxAbsDifference(s.cell) < 1e-8 else {
                    throw DatasetError(message: "\(source): frame \(k): cell_relaxed differs from the cell; only fixed-cell relaxations are supported")
                }
            }
            var initial = s
            initial.arrays["pos_relaxed"] = nil
            let name = s.info["name"]?.stringValue ?? s.info["structure_id"]?.description ?? "\(source)#\(k)"
            return RelaxationExample(name: name, initial: initial, target: t, targetEnergy: s.info["energy_relaxed"]?.doubleValue,
                                     initialEnergy: s.info["energy_initial"]?.doubleValue,
                                     group: s.info["defect"]?.stringValue ?? s.info["kind"]?.stringValue)
        }
    }

    /// Examples from an initial-structure file and a target file with the same frames.
    public static func examples(initial: [Structure], target: [Structure], initialSource: String, targetSource: String) throws -> [RelaxationExample] {
        guard initial.count == target.count else {
            throw DatasetError(message: "\(initialSource) has \(initial.count) frames but \(targetSource) has \(target.count)")
        }
        return try zip(initial, target).enumerated().map { k, pair in
            let (a, b) = pair
            guard a.count == b.count else {
                throw DatasetError(message: "frame \(k): \(a.count) atoms in \(initialSource) but \(b.count) in \(targetSource)")
            }
            guard a.numbers == b.numbers else {
                let i = a.numbers.indices.first { a.numbers[$0] != b.numbers[$0] }!
                throw DatasetError(message: "frame \(k), atom \(i): species \(Elements.symbols[a.numbers[i]]) in \(initialSource) but \(Elements.symbols[b.numbers[i]]) in \(targetSource)")
            }
            guard a.cell.maxAbsDifference(b.cell) < 1e-8 else {
                throw DatasetError(message: "frame \(k): the cells of \(initialSource) and \(targetSource) differ; only fixed-cell relaxations are supported")
            }
            return RelaxationExample(name: a.info["name"]?.stringValue ?? "\(initialSource)#\(k)", initial: a, target: b.positions, targetEnergy: b.energy)
        }
    }

    /// A reproducible train/validation split of n items (validation gets round(n·fraction), at least 1 when
    /// fraction > 0 and n > 1).
    public static func split(count n: Int, validationFraction: Double, seed: UInt64) -> (train: [Int], validation: [Int]) {
        var idx = Array(0..<n)
        var rng = SeededGenerator(seed: seed)
        rng.shuffle(&idx)
        var nv = Int((Double(n) * validationFraction).rounded())
        if validationFraction > 0 && n > 1 { nv = Swift.max(nv, 1) }
        nv = Swift.min(nv, Swift.max(n - 1, 0))
        return (Array(idx[nv...]).sorted(), Array(idx[..<nv]).sorted())
    }
}

/// Elements a potential's model file declares it was trained on (metadata `elements`, neural models); nil when
/// it declares none (classical potentials, and CHGNet, which covers H–Pu).
public func declaredElements(_ potential: any Potential) -> Set<Int>? {
    guard let list = potential.metadata["elements"] else { return nil }
    let zs = list.split(separator: ",").compactMap { Elements.symbols.firstIndex(of: String($0).trimmingCharacters(in: .whitespaces)) }
    return zs.isEmpty ? nil : Set(zs)
}

/// The elements of `numbers` a potential does not know (sorted; empty when it knows them all or declares none).
public func unknownElements(_ numbers: [Int], known: Set<Int>?) -> [Int] {
    guard let known else { return [] }
    return Set(numbers).subtracting(known).sorted()
}
