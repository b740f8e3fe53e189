import Atoms
import FineTune
import Foundation
import Potentials

/// Reads the data options of the training and evaluation commands (--data, --initial/--target, --val,
/// --force-data, --test) the same way everywhere: --frames picks frames of each --data file (and of --initial
/// and --target; other files are read whole), and structures with
/// elements the potential does not know are an error naming the structure, or with --skip-unknown-elements
/// are left out and counted (`notes`).
final class DataReader {
    let command: String
    let selection: FrameSelection
    let framesText: String
    let skipUnknown: Bool
    let known: Set<Int>?
    let potentialName: String
    /// One line per file that lost structures to --skip-unknown-elements.
    private(set) var notes: [String] = []

    init(command: String, frames: String?, skipUnknownElements: Bool, potential: any Potential, potentialName: String) throws {
        self.command = command
        framesText = frames ?? ""
        if let text = frames {
            guard let s = FrameSelection(text) else {
                throw UsageError(command: command, message: "--frames expects an index or a slice such as 3, -1 or 0:10:2, got '\(text)'")
            }
            selection = s
        } else {
            selection = .all
        }
        skipUnknown = skipUnknownElements
        known = declaredElements(potential)
        self.potentialName = potentialName
    }

    /// The frames of `path`, those --frames selects when `select`.
    func frames(_ path: String, option: String, select: Bool = true) throws -> [Structure] {
        guard FileManager.default.fileExists(atPath: path) else { throw UsageError(command: command, message: "\(option) \(path): file not found") }
        let all = try StructureIO.read(path)
        guard select else { return all }
        guard let picked = selection.indices(count: all.count), !picked.isEmpty else {
            throw UsageError(command: command, message: "--frames \(framesText) selects no frame of \(path) (\(all.count) frame(s))")
        }
        return picked.map { all[$0] }
    }

    /// Keeps the items whose structure has only known elements; an unknown element is an error naming the
    /// structure (`name`), or with --skip-unknown-elements the item is left out and counted.
    func keepKnown<T>(_ items: [T], structure: (T) -> Structure, name: (T) -> String, file: String) throws -> [T] {
        guard known != nil else { return items }
        var kept: [T] = [], missing = Set<Int>()
        for item in items {
            let unknown = unknownElements(structure(item).numbers, known: known)
            if unknown.isEmpty { kept.append(item); continue }
            guard skipUnknown else {
                throw UsageError(command: command, message: "\(name(item)) contains \(symbols(unknown)), which \(potentialName) does not know (its elements: "
                                 + "\(symbols(known!.sorted()))); leave such structures out of the data, or pass --skip-unknown-elements")
            }
            missing.formUnion(unknown)
        }
        if kept.count < items.count {
            notes.append("left out \(items.count - kept.count) of \(items.count) structures of \(file) (they contain \(symbols(missing.sorted())), "
                         + "which \(potentialName) does not know)")
        }
        return kept
    }

    /// Relaxation examples (initial structure and reference-relaxed positions) from --data files, or from an
    /// --initial/--target pair matched frame by frame.
    func examples(data: [String], initial: String?, target: String?, option: String = "--data", select: Bool = true) throws -> [RelaxationExample] {
        if let i = initial {
            guard let t = target else { throw UsageError(command: command, message: "--initial needs --target") }
            let all = try RelaxationDataset.examples(initial: try frames(i, option: "--initial", select: select), target: try frames(t, option: "--target", select: select),
                                                     initialSource: i, targetSource: t)
            return try keepKnown(all, structure: \.initial, name: \.name, file: i)
        }
        guard !data.isEmpty else { throw UsageError(command: command, message: "give \(option) FILE (or --initial and --target)") }
        return try data.flatMap { path in
            try keepKnown(try RelaxationDataset.examples(from: try frames(path, option: option, select: select), source: path), structure: \.initial, name: \.name, file: path)
        }
    }

    /// Labelled frames (energy and/or forces) of `paths`; `requireForces` refuses frames without forces.
    func labelledFrames(_ paths: [String], option: String, select: Bool = true, requireForces: Bool = false) throws -> [Structure] {
        try paths.flatMap { path -> [Structure] in
            let fs = try frames(path, option: option, select: select)
            if requireForces, let k = fs.firstIndex(where: { $0.forces == nil }) {
                throw UsageError(command: command, message: "\(path): frame \(k + 1) has no forces (\(option) needs per-atom forces)")
            }
            return try keepKnown(Array(fs.enumerated()), structure: \.element, name: { "\(path) frame \($0.offset)" }, file: path).map(\.element)
        }
    }

    private func symbols(_ zs: [Int]) -> String { zs.map { Elements.symbols[$0] }.joined(separator: ", ") }
}
