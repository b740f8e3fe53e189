import Atoms
import Foundation
import Tape

/// SchNet (Schütt et al., J. Chem. Phys. 148, 241722 (2018); NeurIPS 2017), the invariant baseline.
///
/// x_i = Embed(Z_i) ∈ ℝ^F; per interaction block (residual, Eq. 5):
///   W_ij = Dense(ssp(Dense(g(d_ij)))) · φ_cut(d_ij)         (filter network on the Gaussian basis g, K functions)
///   m_i  = Σ_j (x_j W_in) ⊙ W_ij                            (continuous-filter convolution, Eq. 3)
///   x_i += Dense(ssp(Dense(m_i)))
/// Energy E = Σ_i (s · Dense(ssp(Dense_{F→F/2}(x_i))) + e_Z(i)), ssp(x) = ln(1 + eˣ) − ln 2. The cosine
/// cutoff on the filter (SchNetPack's `CosineCutoff`) makes the energy C¹ at r_c.
public struct SchNet: Potential {
    public struct Config: Sendable, Equatable {
        public var features = 64
        public var layers = 3
        public var cutoff = 5.0
        public var radialBasis = 32
        public var elements = [14]
        public var energyScale = 1.0

        public init(features: Int = 64, layers: Int = 3, cutoff: Double = 5, radialBasis: Int = 32, elements: [Int] = [14], energyScale: Double = 1) {
            self.features = features
            self.layers = layers
            self.cutoff = cutoff
            self.radialBasis = radialBasis
            self.elements = elements
            self.energyScale = energyScale
        }

        var shared: SharedHyperparameters {
            SharedHyperparameters(features: features, layers: layers, cutoff: cutoff, radialBasis: radialBasis, elements: elements, energyScale: energyScale)
        }

        /// Number of parameters `initialParameters` creates, in closed form (Double: no overflow, nothing allocated).
        var parameterCount: Double {
            let f = Double(features), k = Double(radialBasis), e = Double(elements.count), h = (f / 2).rounded(.down)
            let layer = (k * f + f) + (f * f + f) + f * f + 2 * (f * f + f)
            return e * f + Double(layers) * layer + (f * h + h) + (h + 1) + e
        }

        public func validate() throws { try shared.validate("schnet", minFeatures: 2, parameterCount: parameterCount) }
    }

    public var parameters: OrderedDictionary<Tensor>
    public let config: Config
    public var provenance: [String: String] = [:]
    let species: SpeciesTable
    /// Filters computed once per undirected pair (the default) or per directed pair, as written in the paper;
    /// the two agree to rounding, and tests compare them.
    var sharesPairFilters = true
    /// Precision of the network (opt-in `.float32`): its layers run in single precision between two casts, while
    /// the geometry (distances, basis, cutoff weights), the atomic reference energies and the sum stay float64.
    /// Not stored in model files: a property of the run, not of the model.
    public var precision: ScalarKind = .float64

    public var kind: String { "schnet" }
    public var cutoff: Double { config.cutoff }

    public init(_ config: Config, seed: UInt64 = 0) throws {
        try config.validate()
        self.config = config
        species = SpeciesTable(config.elements)
        parameters = Self.initialParameters(config, seed: seed)
    }

    public init(_ config: Config, parameters: OrderedDictionary<Tensor>, provenance: [String: String] = [:]) throws {
        try config.validate()
        try checkShapes(parameters, against: Self.initialParameters(config, seed: 0), kind: "schnet")
        self.config = config
        self.parameters = parameters
        self.provenance = provenance
        species = SpeciesTable(config.elements)
    }

    static func initialParameters(_ c: Config, seed: UInt64) -> OrderedDictionary<Tensor> {
        var p = ParameterInit(seed: seed)
        let f = c.features
        p.set("embedding", p.rng.normalTensor([c.elements.count, f]))
        for l in 0..<c.layers {
            let pre = "interactions.\(l)"
            p.dense("\(pre).filter0", c.radialBasis, f)
            p.dense("\(pre).filter1", f, f)
            p.dense("\(pre).in2f", f, f, bias: false)
            p.dense("\(pre).f2out0", f, f)
            p.dense("\(pre).f2out1", f, f)
        }
        p.dense("readout.0", f, f / 2)
        p.dense("readout.1", f / 2, 1, gain: 0.1)
        p.set("atomic_energies", Tensor.zeros([c.elements.count]))
        return p.parameters
    }

    public var metadata: [String: String] { config.shared.metadata(basis: "gaussian", provenance: provenance) }

    static func load(_ p: OrderedDictionary<Tensor>, _ m: [String: String]) throws -> any Potential {
        let h = try SharedHyperparameters.read(m, kind: "schnet", basis: "gaussian")
        let config = Config(features: h.features, layers: h.layers, cutoff: h.cutoff, radialBasis: h.radialBasis,
                            elements: h.elements, energyScale: h.energyScale)
        return try SchNet(config, parameters: p, provenance: m.filter { !SharedHyperparameters.keys.contains($0.key) })
    }

    public func energies(_ system: AtomicSystem, positions: Variable, cells: Variable, parameters p: [String: Variable]) -> Variable {
        let c = config
        let n = system.atomCount
        let spec = species.indices(system.numbers, model: "schnet")
        let k = precision
        let q = k == .float64 ? p : p.mapValues { $0.cast(to: k) }
        var x = q["embedding"]!.gatherRows(spec)
        let geo = PairGeometry(system, positions: positions, cells: cells, cutoff: c.cutoff)
        let sys = geo.system
        if sys.pairs.pairCount > 0 && c.layers > 0 {
            let ii = sys.pairs.first, jj = sys.pairs.second
            // The filter depends on the distance only: computed once per undirected pair, gathered for both
            // directions (halves the filter network's cost).
            let (reps, repOf) = filterPairs(sys.pairs, shared: sharesPairFilters)
            let rbf = gaussianBasis(geo.distances.gatherRows(reps), cutoff: c.cutoff, count: c.radialBasis).cast(to: k)
            let cutU = geo.cutoffWeights.gatherRows(reps).cast(to: k)
            for l in 0..<c.layers {
                let pre = "interactions.\(l)"
                let w = dense(shiftedSoftplus(dense(rbf, q, "\(pre).filter0")), q, "\(pre).filter1") * cutU
                let m = gatheredProduct([GatheredFactor(dense(x, q, "\(pre).in2f"), jj), GatheredFactor(w, repOf)], scatterInto: ii, count: n)
                x = x + dense(shiftedSoftplus(dense(m, q, "\(pre).f2out0")), q, "\(pre).f2out1")
            }
        }
        let atomE = (dense(shiftedSoftplus(dense(x, q, "readout.0")), q, "readout.1") * c.energyScale).cast(to: .float64)
            + p["atomic_energies"]!.gatherRows(spec).reshaped([n, 1])
        return system.sumPerStructure(atomE)
    }
}
