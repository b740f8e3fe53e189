import Atoms
import FineTune
import Foundation
import Potentials
import Relax

/// Reads the data options of the training and evaluation commands (--data, --initial/--target, --val,
/// --force-data, --test) the same way everywhere: --frames picks frames of each --data file (and of --initial
/// and --target; other files are read whole), and structures with
/// elements the potential does not know are an error naming the structure, or with --skip-unknown-elements
/// are left out and counted (`notes`). Every structure kept is checked as the potential will see it
/// (`Potential.checkInput`: positions and the neighbour list's size).
final class DataReader {
    let command: String
    let selection: FrameSelection
    let framesText: String
    let skipUnknown: Bool
    let potential: any Potential
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
        self.potential = potential
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
    /// structure (`name`), or with --skip-unknown-elements the item is left out and counted. A kept structure the
    /// potential cannot evaluate (positions, neighbour list beyond memory) is an error naming it.
    func keepKnown<T>(_ items: [T], structure: (T) -> Structure, name: (T) -> String, file: String) throws -> [T] {
        var kept: [T] = [], missing = Set<Int>()
        for item in items {
            let s = structure(item)
            let unknown = potential.uncoveredElements(s.numbers)
            if unknown.isEmpty {
                do { try potential.checkInput(s, name: name(item), potentialName: potentialName, skin: RelaxationSettings().skin) }
                catch let e as PotentialInputError { throw UsageError(command: command, message: e.message) }
                kept.append(item)
                continue
            }
            guard skipUnknown else {
                let problem = potential.coverageProblem(s.numbers, name: name(item), potentialName: potentialName) ?? ""
                throw UsageError(command: command, message: problem + "; leave such structures out of the data, or pass --skip-unknown-elements")
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
            return try keepKnown(all, structure: \.initial, name: \.displayName, file: i)
        }
        guard !data.isEmpty else { throw UsageError(command: command, message: "give \(option) FILE (or --initial and --target)") }
        return try data.flatMap { path in
            try keepKnown(try RelaxationDataset.examples(from: try frames(path, option: option, select: select), source: path), structure: \.initial, name: \.displayName, file: path)
        }
    }

    /// Labelled frames (energy and/or forces) of `paths`; `requireForces` refuses frames without forces.
    func labelledFrames(_ paths: [String], option: String, select: Bool = true, requireForces: Bool = false) throws -> [Structure] {
        try paths.flatMap { path -> [Structure] in
            let fs = try frames(path, option: option, select: select)
            if requireForces, let k = fs.firstIndex(where: { $0.forces == nil }) {
                throw UsageError(command: command, message: "\(path): frame \(k + 1) has no forces (\(option) needs per-atom forces)")
            }
            return try keepKnown(Array(fs.enumerated()), structure: \.element, name: { "\(path): frame \($0.offset + 1)" }, file: path).map(\.element)
        }
    }

    private func symbols(_ zs: [Int]) -> String { zs.map { Elements.symbols[$0] }.joined(separator: ", ") }
}
