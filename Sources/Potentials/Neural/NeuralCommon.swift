import Atoms
import Foundation
import Tape

// Building blocks shared by the neural potentials: dense layers over named parameters, radial bases, the
// cosine cutoff, species indexing and hyperparameter parsing. Everything works on whole [atoms, F] or
// [pairs, F] tensors, so one energy costs O(layers × a few dozen) tape nodes whatever the system size.

/// Named-parameter initialisation with a seeded generator (reproducible models from a seed).
struct ParameterInit {
    var parameters = OrderedDictionary<Tensor>()
    var rng: SeededGenerator

    init(seed: UInt64) { rng = SeededGenerator(seed: seed) }

    /// Dense layer `name.weight` [in, out] (LeCun-normal, std = gain/√in) and `name.bias` [out] (zeros).
    mutating func dense(_ name: String, _ fanIn: Int, _ fanOut: Int, bias: Bool = true, gain: Double = 1) {
        parameters["\(name).weight"] = rng.normalTensor([fanIn, fanOut], scale: gain / Double(fanIn).squareRoot())
        if bias { parameters["\(name).bias"] = Tensor.zeros([fanOut]) }
    }

    mutating func set(_ name: String, _ t: Tensor) { parameters[name] = t }
}

/// x·W (+ b) with parameters `name.weight`, `name.bias` (bias optional: used when present).
@inline(__always)
func dense(_ x: Variable, _ p: [String: Variable], _ name: String) -> Variable {
    guard let w = p["\(name).weight"] else { preconditionFailure("missing parameter \(name).weight") }
    if let b = p["\(name).bias"] { return x.affine(w, b) }
    return matmul(x, w)
}

/// ½(cos(πd/r_c) + 1) for d < r_c (SO3krates Eq. 17, Behler's cutoff): C¹ at r_c, so energies and forces
/// are continuous when a neighbour crosses the cutoff. Pairs at or beyond r_c are removed beforehand.
func cosineCutoff(_ d: Variable, cutoff: Double) -> Variable {
    ((d * (Double.pi / cutoff)).cos() + 1) * 0.5
}

/// PhysNet radial basis (Unke & Meuwly 2019, Eq. 7; mlff `radial.py`): φ_k(d) = exp(−β(e^{−d} − μ_k)²),
/// μ_k = linspace(e^{−r_c}, 1, K), β = ((2/K)(1 − e^{−r_c}))^{−2}. d: [P, 1] → [P, K].
func physNetBasis(_ d: Variable, cutoff: Double, count k: Int) -> Variable {
    let lo = Foundation.exp(-cutoff)
    let mu = Tensor(shape: [1, k], (0..<k).map { lo + (1 - lo) * Double($0) / Double(Swift.max(k - 1, 1)) })
    let beta = 1 / ((2 / Double(k)) * (1 - lo) * (2 / Double(k)) * (1 - lo))
    return (((-d).exp() - Variable(constant: mu)).squared() * (-beta)).exp()
}

/// Gaussian radial basis (SchNet, Schütt et al. 2018 Eq. 4): exp(−γ(d − μ_k)²), μ_k = linspace(0, r_c, K),
/// γ = 1/(2Δμ²) with Δμ the spacing (SchNetPack's `GaussianRBF` default width). d: [P, 1] → [P, K].
func gaussianBasis(_ d: Variable, cutoff: Double, count k: Int) -> Variable {
    let spacing = cutoff / Double(Swift.max(k - 1, 1))
    let mu = Tensor(shape: [1, k], (0..<k).map { spacing * Double($0) })
    let gamma = 1 / (2 * spacing * spacing)
    return ((d - Variable(constant: mu)).squared() * (-gamma)).exp()
}

/// Shifted softplus ssp(x) = ln(1 + eˣ) − ln 2 (SchNet), zero at x = 0.
func shiftedSoftplus(_ x: Variable) -> Variable { x.softplus(minus: Foundation.log(2.0)) }

/// The elements a model knows, as atomic numbers in model order, and the species index of each atom.
struct SpeciesTable: Sendable {
    let elements: [Int]
    private let index: [Int: Int]

    init(_ elements: [Int]) {
        self.elements = elements
        var d: [Int: Int] = [:]
        for (k, z) in elements.enumerated() { d[z] = k }
        index = d
    }

    func indices(_ numbers: [Int], model: String) -> [Int] {
        numbers.map { z in
            guard let k = index[z] else {
                preconditionFailure("\(model): element \(z < Elements.symbols.count ? Elements.symbols[z] : "Z=\(z)") is not among the model's elements \(elements.map { Elements.symbols[$0] }.joined(separator: ", "))")
            }
            return k
        }
    }

    /// Atomic numbers not known to the model (for clear errors before an evaluation).
    func unknown(_ numbers: [Int]) -> [Int] { Array(Set(numbers.filter { index[$0] == nil })).sorted() }

    var metadataString: String { elements.map { Elements.symbols[$0] }.joined(separator: ",") }

    static func parse(_ s: String) throws -> [Int] {
        try s.split(separator: ",").map { sym in
            let t = sym.trimmingCharacters(in: .whitespaces)
            guard let z = Elements.symbols.firstIndex(of: t), z > 0 else { throw PotentialSpecError(message: "unknown element '\(t)' in model metadata") }
            return z
        }
    }
}

/// Reads a hyperparameter from model metadata with a clear error.
func hyper<T: LosslessStringConvertible>(_ m: [String: String], _ key: String, _ kind: String) throws -> T {
    guard let s = m[key] else { throw PotentialSpecError(message: "\(kind) model file: metadata has no '\(key)'") }
    guard let v = T(s) else { throw PotentialSpecError(message: "\(kind) model file: metadata '\(key)' = '\(s)' is not a valid \(T.self)") }
    return v
}

/// Checks that every parameter a model needs is present with the expected shape.
func checkShapes(_ loaded: OrderedDictionary<Tensor>, against expected: OrderedDictionary<Tensor>, kind: String) throws {
    for (name, t) in expected {
        guard let l = loaded[name] else { throw PotentialSpecError(message: "\(kind) model file: missing tensor '\(name)'") }
        guard l.shape == t.shape else {
            throw PotentialSpecError(message: "\(kind) model file: tensor '\(name)' has shape \(l.shape), the metadata implies \(t.shape)")
        }
    }
    for (name, _) in loaded where expected[name] == nil {
        throw PotentialSpecError(message: "\(kind) model file: unexpected tensor '\(name)'")
    }
}

/// The pairs at which filters that are symmetric in (i, j) are computed, and each directed pair's row among
/// them: one per undirected pair when `shared`, else every directed pair for itself.
func filterPairs(_ pairs: NeighborList, shared: Bool) -> (representatives: [Int], representativeOf: [Int]) {
    if shared { return pairs.undirectedPairs }
    let all = Array(0..<pairs.pairCount)
    return (all, all)
}

/// Per-pair geometry of a batched system restricted to the cutoff: unit vectors, distances [P, 1], cutoff
/// weights [P, 1]. The pair list is a value-level choice (pairs ≥ r_c are dropped; they have zero weight).
struct PairGeometry {
    let system: AtomicSystem
    let vectors: Variable
    let distances: Variable
    let cutoffWeights: Variable

    init(_ system0: AtomicSystem, positions: Variable, cells: Variable, cutoff: Double) {
        system = system0.within(cutoff, positions: positions.value, cells: cells.value)
        vectors = system.pairVectors(positions: positions, cells: cells)
        distances = vectors.norm(keepDims: true)
        cutoffWeights = cosineCutoff(distances, cutoff: cutoff)
    }
}


/// The hyperparameters both neural models share: checks, metadata entries, and reading them back.
struct SharedHyperparameters {
    var features: Int
    var layers: Int
    var cutoff: Double
    var radialBasis: Int
    var elements: [Int]
    var energyScale: Double

    /// Metadata keys written by `metadata(basis:)` (the rest of a file's metadata is provenance).
    static let keys: Set<String> = ["features", "layers", "cutoff", "radial_basis", "radial_basis_size", "cutoff_function",
                                    "elements", "energy_scale", "relaxft_kind"]

    /// Checks the hyperparameters, and that `parameterCount` parameters (a closed form of the architecture,
    /// evaluated before anything is allocated) fit in memory with their gradients and Adam's two moments.
    func validate(_ kind: String, minFeatures: Int, parameterCount: Double) throws {
        func fail(_ s: String) throws -> Never { throw PotentialSpecError(message: "\(kind): \(s)") }
        if features < minFeatures || layers < 0 || radialBasis < 2 { try fail("features ≥ \(minFeatures), layers ≥ 0, radial basis ≥ 2 required") }
        if let p = PotentialLimits.cutoffProblem(cutoff) { try fail(p) }
        if elements.isEmpty || Set(elements).count != elements.count { try fail("elements must be a non-empty list without repeats") }
        if !(energyScale > 0 && energyScale.isFinite) { try fail("energy scale must be positive") }
        do {
            try MemoryBudget.require(4 * 8 * parameterCount,
                                     for: "\(kind) with \(features) features, \(layers) layers and \(radialBasis) radial basis functions "
                                        + "(\(String(format: "%.3g", parameterCount)) parameters, with gradients and optimizer state)")
        } catch let e as ResourceError {
            try fail(e.message)
        }
    }

    /// Memory of one neighbour pair in an evaluation with forces: the per-pair radial basis and, per layer, a few
    /// [pairs, features] filter tensors kept for the backward pass (a lower estimate).
    var bytesPerPair: Double { 8 * (Double(radialBasis) + 8 * Double(features) * Double(Swift.max(layers, 1))) }

    var coveredElements: Set<Int> { Set(elements) }

    func metadata(basis: String, provenance: [String: String]) -> [String: String] {
        var m = provenance
        m["features"] = "\(features)"
        m["layers"] = "\(layers)"
        m["cutoff"] = "\(cutoff)"
        m["radial_basis"] = basis
        m["radial_basis_size"] = "\(radialBasis)"
        m["cutoff_function"] = "cosine"
        m["elements"] = SpeciesTable(elements).metadataString
        m["energy_scale"] = "\(energyScale)"
        return m
    }

    static func read(_ m: [String: String], kind: String, basis: String) throws -> SharedHyperparameters {
        if let b = m["radial_basis"], b != basis { throw PotentialSpecError(message: "\(kind) model file: radial basis '\(b)' is not supported (\(basis))") }
        return SharedHyperparameters(features: try hyper(m, "features", kind), layers: try hyper(m, "layers", kind),
                                     cutoff: try hyper(m, "cutoff", kind), radialBasis: try hyper(m, "radial_basis_size", kind),
                                     elements: try SpeciesTable.parse(m["elements"] ?? ""), energyScale: try hyper(m, "energy_scale", kind))
    }
}
