import Foundation
import Tape
import Testing
@testable import Atoms

/// Paths inside the repository, found from this file's location (the tests need no working directory).
enum Repo {
    static let root = repoRoot
    static let structures = root.appendingPathComponent("Fixtures/structures")
    static let malformed = root.appendingPathComponent("Tests/AtomsTests/Malformed")

    static func structure(_ name: String) -> String { structures.appendingPathComponent(name).path }

    /// Fixtures/structures/expected.json: what ASE reads back from every fixture.
    static let expected: JSONValue = {
        let data = FileManager.default.contents(atPath: structures.appendingPathComponent("expected.json").path) ?? Data()
        return JSONValue.parse(String(decoding: data, as: UTF8.self)) ?? .null
    }()

    static var fixtureNames: [String] {
        guard case .object(let files)? = expected["files"] else { return [] }
        return files.map(\.0)
    }
}

extension JSONValue {
    var array: [JSONValue] { if case .array(let a) = self { return a } else { return [] } }
    var doubles: [Double] { array.compactMap(\.doubleValue) }
    var ints: [Int] { array.compactMap(\.intValue) }
    var bools: [Bool] { array.compactMap { if case .bool(let b) = $0 { return b } else { return nil } } }
    var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    var members: [(String, JSONValue)] { if case .object(let m) = self { return m } else { return [] } }
}

/// An expected `{"t": type, "v": value}` entry of expected.json as an InfoValue.
func infoValue(_ e: JSONValue) -> InfoValue? {
    guard let t = e["t"]?.stringValue, let v = e["v"] else { return nil }
    switch t {
    case "int": return v.intValue.map { .int($0) }
    case "double": return v.doubleValue.map { .double($0) }
    case "bool": if case .bool(let b) = v { return .bool(b) } else { return nil }
    case "string", "json": return v.stringValue.map { .string($0) }
    case "ints": return .ints(v.ints)
    case "doubles": return .doubles(v.doubles)
    case "bools": return .bools(v.bools)
    case "strings": return .strings(v.array.compactMap(\.stringValue))
    default: return nil
    }
}

/// An expected per-atom entry as a PerAtomArray (width from "w").
func perAtomArray(_ e: JSONValue, atoms n: Int) -> PerAtomArray? {
    guard let t = e["t"]?.stringValue, let v = e["v"] else { return nil }
    let w = e["w"]?.intValue ?? 1
    switch t {
    case "doubles": return .doubles(Tensor(shape: [n, w], v.doubles))
    case "ints": return .ints(v.ints, width: w)
    case "bools": return .bools(v.bools, width: w)
    case "strings": return .strings(v.array.compactMap(\.stringValue))
    default: return nil
    }
}

/// Compares a structure read by relaxft with what ASE read from the same file. `positionTolerance` nil means bit
/// for bit; otherwise positions may differ by that much after removing whole lattice vectors (CIF).
func expectMatchesASE(_ s: Structure, _ e: JSONValue, positionTolerance: Double? = nil, context: String) {
    let n = s.count
    #expect(s.numbers == e["numbers"]?.ints, "\(context): numbers")
    #expect(s.pbc == e["pbc"]?.bools, "\(context): pbc")
    #expect(bitwiseEqual(s.cell.array.map { $0 + 0 }, (e["cell"]?.doubles ?? []).map { $0 + 0 }), "\(context): cell \(s.cell.array) vs \(e["cell"]?.doubles ?? [])")
    let expectedPositions = e["positions"]?.doubles ?? []
    if let tol = positionTolerance {
        let inverse = s.cell.inverse3x3() ?? .identity(3)
        let diff = Tensor.matmul(s.positions - Tensor(shape: [n, 3], expectedPositions), inverse)
        let wrapped = diff.map { $0 - $0.rounded() }
        let worst = Tensor.matmul(wrapped, s.cell).maxAbs
        #expect(worst <= tol, "\(context): positions differ by \(worst) Å")
    } else {
        #expect(s.positions.array == expectedPositions, "\(context): positions")
    }
    let fixed = (s.fixed ?? []).enumerated().filter(\.element).map(\.offset)
    #expect(fixed == e["fixed"]?.ints, "\(context): fixed atoms")
    if let masses = e["masses"], masses != .null {
        #expect(s.customMasses == masses.doubles, "\(context): masses")
    } else {
        #expect(s.customMasses == nil, "\(context): masses")
    }
    for (key, value) in e["info"]?.members ?? [] {
        #expect(s.info[key] == infoValue(value), "\(context): info[\(key)] = \(String(describing: s.info[key])) vs \(value)")
    }
    for (key, value) in e["arrays"]?.members ?? [] {
        #expect(s.arrays[key] == perAtomArray(value, atoms: n), "\(context): arrays[\(key)]")
    }
    // ASE moves energies, forces, stress, … into a SinglePointCalculator; relaxft keeps them in info and arrays.
    for (key, value) in e["calc"]?.members ?? [] {
        if key == "stress" {
            let t = s.stress?.array ?? []
            let voigt = t.isEmpty ? [] : [t[0], t[4], t[8], t[5], t[2], t[1]]
            #expect(voigt == value["v"]?.doubles, "\(context): stress")
        } else if ["forces", "energies", "magmoms", "charges", "stresses"].contains(key) {
            #expect(s.arrays[key] == perAtomArray(value, atoms: n), "\(context): arrays[\(key)]")
        } else {
            #expect(s.info[key]?.doubleValue == infoValue(value)?.doubleValue, "\(context): info[\(key)]")
        }
    }
    #expect(Set(s.info.keys).isSuperset(of: (e["info"]?.members ?? []).map(\.0)), "\(context): info keys")
}

/// Bit-for-bit identity of two structures (all fields; info and arrays compared by value).
func expectBitIdentical(_ a: Structure, _ b: Structure, context: String) {
    #expect(a.numbers == b.numbers, "\(context): numbers")
    #expect(a.positions.bitwiseEqual(b.positions), "\(context): positions")
    #expect(a.cell.bitwiseEqual(b.cell), "\(context): cell")
    #expect(a.pbc == b.pbc, "\(context): pbc")
    #expect(a.fixed == b.fixed, "\(context): fixed")
    #expect(bitwiseEqual(a.customMasses ?? [], b.customMasses ?? []) && (a.customMasses == nil) == (b.customMasses == nil), "\(context): masses")
    #expect(a.info.keys == b.info.keys, "\(context): info keys \(a.info.keys) vs \(b.info.keys)")
    for (k, v) in a.info { #expect(b.info[k] == v, "\(context): info[\(k)] \(v) vs \(String(describing: b.info[k]))") }
    #expect(a.arrays.keys == b.arrays.keys, "\(context): array keys")
    for (k, v) in a.arrays {
        if case .doubles(let x) = v, case .doubles(let y)? = b.arrays[k] {
            #expect(x.bitwiseEqual(y), "\(context): arrays[\(k)]")
        } else {
            #expect(b.arrays[k] == v, "\(context): arrays[\(k)]")
        }
    }
}
