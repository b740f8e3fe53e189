import Tape

/// A value in a structure's free-form `info` (per-frame key/value, as in ASE's `atoms.info`).
public enum InfoValue: Sendable, Equatable, CustomStringConvertible {
    case int(Int)
    case double(Double)
    case bool(Bool)
    case string(String)
    case ints([Int])
    case doubles([Double])
    case bools([Bool])
    case strings([String])

    public var description: String {
        switch self {
        case .int(let v): return "\(v)"
        case .double(let v): return "\(v)"
        case .bool(let v): return v ? "T" : "F"
        case .string(let v): return v
        case .ints(let v): return v.map(String.init).joined(separator: " ")
        case .doubles(let v): return v.map { "\($0)" }.joined(separator: " ")
        case .bools(let v): return v.map { $0 ? "T" : "F" }.joined(separator: " ")
        case .strings(let v): return v.joined(separator: " ")
        }
    }

    public var doubleValue: Double? {
        switch self {
        case .double(let v): return v
        case .int(let v): return Double(v)
        default: return nil
        }
    }

    public var doublesValue: [Double]? {
        switch self {
        case .doubles(let v): return v
        case .ints(let v): return v.map(Double.init)
        case .double(let v): return [v]
        case .int(let v): return [Double(v)]
        default: return nil
        }
    }

    public var intValue: Int? { if case .int(let v) = self { return v } else { return nil } }
    public var boolValue: Bool? { if case .bool(let v) = self { return v } else { return nil } }
    public var stringValue: String? { if case .string(let v) = self { return v } else { return nil } }
}

/// A per-atom column (as in ASE's `atoms.arrays`): `width` values per atom.
public enum PerAtomArray: Sendable, Equatable {
    /// Real values, shape [N, width] (width 1 is stored as [N, 1]).
    case doubles(Tensor)
    case ints([Int], width: Int)
    case bools([Bool], width: Int)
    case strings([String])

    public var width: Int {
        switch self {
        case .doubles(let t): return t.shape.count > 1 ? t.shape[1] : 1
        case .ints(_, let w), .bools(_, let w): return w
        case .strings: return 1
        }
    }

    public var atomCount: Int {
        switch self {
        case .doubles(let t): return t.shape[0]
        case .ints(let v, let w): return v.count / w
        case .bools(let v, let w): return v.count / w
        case .strings(let v): return v.count
        }
    }
}

extension Tensor: Equatable {
    /// Equality of shape and every element (NaN ≠ NaN, as for Double).
    public static func == (a: Tensor, b: Tensor) -> Bool {
        guard a.shape == b.shape else { return false }
        return a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in pa.elementsEqual(pb) } }
    }
}

/// Insertion-ordered string-keyed dictionary (info keys and per-atom columns keep their file order).
public struct OrderedDictionary<Value: Sendable & Equatable>: Sendable, Equatable, Sequence {
    public private(set) var keys: [String] = []
    private var storage: [String: Value] = [:]

    public init() {}

    public subscript(key: String) -> Value? {
        get { storage[key] }
        set {
            if let v = newValue {
                if storage.updateValue(v, forKey: key) == nil { keys.append(key) }
            } else if storage.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }

    public var count: Int { keys.count }
    public var isEmpty: Bool { keys.isEmpty }

    public func makeIterator() -> AnyIterator<(key: String, value: Value)> {
        var i = 0
        return AnyIterator {
            guard i < keys.count else { return nil }
            defer { i += 1 }
            return (keys[i], storage[keys[i]]!)
        }
    }
}

/// An atomic structure: species, Cartesian positions (Å), cell (rows are lattice vectors, Å), periodicity,
/// masses, fixed atoms, and free-form per-frame and per-atom data.
public struct Structure: Sendable, Equatable {
    /// Atomic numbers.
    public var numbers: [Int]
    /// Cartesian positions, shape [N, 3], Å.
    public var positions: Tensor
    /// Lattice vectors as rows, shape [3, 3], Å; all zeros for a molecule without a cell.
    public var cell: Tensor
    /// Periodicity along each lattice vector.
    public var pbc: [Bool]
    /// Per-atom masses (u) when overridden; nil means standard atomic weights.
    public var customMasses: [Double]?
    /// Per-atom fixed flags (true: the atom does not move in relaxations); nil means none fixed.
    public var fixed: [Bool]?
    /// Per-frame values (energy, stress, labels, …).
    public var info = OrderedDictionary<InfoValue>()
    /// Additional per-atom columns (forces, tags, …), excluding species, positions, masses and fixed flags.
    public var arrays = OrderedDictionary<PerAtomArray>()

    public init(numbers: [Int], positions: Tensor, cell: Tensor = .zeros([3, 3]), pbc: [Bool] = [false, false, false]) {
        precondition(positions.shape == [numbers.count, 3], "positions must have shape [\(numbers.count), 3], got \(positions.shape)")
        precondition(cell.shape == [3, 3], "cell must be 3×3")
        precondition(pbc.count == 3, "pbc needs three flags")
        self.numbers = numbers
        self.positions = positions
        self.cell = cell
        self.pbc = pbc
    }

    public var count: Int { numbers.count }

    public var symbols: [String] { numbers.map { Elements.symbols[$0] } }

    /// Masses in u: the overrides when set, else standard atomic weights.
    public var masses: [Double] { customMasses ?? numbers.map { Elements.masses[$0] } }

    public var isPeriodic: Bool { pbc.contains(true) }

    /// Whether the cell is non-degenerate (|det| above a tiny threshold).
    public var hasCell: Bool { Swift.abs(cell.determinant3x3) > 1e-12 }

    public var volume: Double { Swift.abs(cell.determinant3x3) }

    /// Mask (1 per free atom, 0 per fixed atom), shape [N, 1].
    public var freeMask: Tensor {
        Tensor(shape: [count, 1], (fixed ?? Array(repeating: false, count: count)).map { $0 ? 0 : 1 })
    }

    // Conventional per-frame and per-atom data, under the names ASE uses in extended XYZ.

    public var energy: Double? {
        get { info["energy"]?.doubleValue }
        set { info["energy"] = newValue.map { .double($0) } }
    }

    /// Forces (eV/Å), shape [N, 3].
    public var forces: Tensor? {
        get { if case .doubles(let t)? = arrays["forces"] { return t } else { return nil } }
        set { arrays["forces"] = newValue.map { .doubles($0) } }
    }

    /// Stress as a 3×3 tensor (eV/Å³, ASE sign convention: positive = tensile). Accepts 9 or Voigt 6 values.
    public var stress: Tensor? {
        get {
            guard let v = info["stress"]?.doublesValue else { return nil }
            if v.count == 9 { return Tensor(shape: [3, 3], v) }
            if v.count == 6 { return Tensor(shape: [3, 3], [v[0], v[5], v[4], v[5], v[1], v[3], v[4], v[3], v[2]]) }
            return nil
        }
        set { info["stress"] = newValue.map { .doubles($0.array) } }
    }

    /// Per-frame and per-atom keys under which ASE's extxyz stores a calculator's results (its
    /// `per_config_properties` and `per_atom_properties`, and `virial`).
    public static let calculatorInfoKeys = ["energy", "free_energy", "stress", "virial", "dipole", "magmom"]
    public static let calculatorArrayKeys = ["forces", "stresses", "charges", "magmoms", "energies"]

    /// Removes calculator results, which belong to the geometry they were computed for (so that a moved
    /// structure does not carry another geometry's energy, forces or stress).
    public mutating func removeCalculatorResults() {
        for k in Self.calculatorInfoKeys { info[k] = nil }
        for k in Self.calculatorArrayKeys { arrays[k] = nil }
    }

    /// Reciprocal-free fractional coordinates x·cell⁻¹ (cell must be non-singular).
    public func fractionalPositions() -> Tensor? {
        guard let inv = cell.inverse3x3() else { return nil }
        return Tensor.matmul(positions, inv)
    }
}
