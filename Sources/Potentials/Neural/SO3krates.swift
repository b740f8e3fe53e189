import Atoms
import Foundation
import Tape

/// SO3krates-style equivariant transformer (Frank, Unke, Müller, Chmiela, Nat. Commun. 15, 6539 (2024);
/// layer structure of the authors' reference code, github.com/thorben-frank/mlff).
///
/// State per atom: invariant features x_i ∈ ℝ^F and Euclidean variables χ_i (real spherical-harmonic
/// coefficients of degrees 1…L, no l = 0, one copy per degree; initialised to zero as in the code, not
/// paper Eq. 11). Per layer:
/// - filters (Eq. 20) w_ij = MLP_rad(φ(d_ij)) + MLP_sph(c(χ_j − χ_i)), one for x and one for χ, with the
///   PhysNet basis φ (K functions) and the per-degree contraction c_l(v) = Σ_m v_lm² / √(2l+1);
/// - softmax-free invariant attention (Eqs. 15, 21), H heads of size F/H:
///   α^h_ij = Σ_{f∈h} q_if w_ijf k_jf / √(F/H) · φ_cut(d_ij),  Δx_i = Σ_j α^h_ij v_j;
/// - equivariant attention (Eq. 26), one head per degree with its own q, k and filter:
///   α^l_ij = Σ_{f∈l} q_if w_ijf k_jf / √(F/L) · φ_cut(d_ij),  Δχ_i,lm = Σ_j α^l_ij Y_lm(r̂_ij);
/// - residual updates x += Δx, χ += Δχ, then the exchange block (Eq. 25):
///   [a, b] = Dense(F + L)([x_i, c(χ_i)]),  x_i += a,  χ_i,l += b_l χ_i,l.
/// Energy E = Σ_i (s · MLP(x_i) + e_Z(i)) with a fixed scale s and per-element reference energies e_Z.
///
/// Differences from the reference code, chosen for simplicity: q, k, v are full F×F maps (the code applies
/// one F/H × F/H map per head, a block-diagonal special case); the sph-filter hidden width is max(F/4, 1).
public struct SO3krates: Potential {
    public struct Config: Sendable, Equatable {
        public var features = 48
        public var layers = 2
        public var heads = 4
        /// Degrees 1…maxDegree of the Euclidean variables.
        public var maxDegree = 3
        public var cutoff = 5.0
        public var radialBasis = 32
        /// Atomic numbers the model knows, in model order.
        public var elements = [14]
        /// Scale s of the per-atom readout (eV); the trainer sets it from the data.
        public var energyScale = 1.0

        public init(features: Int = 48, layers: Int = 2, heads: Int = 4, maxDegree: Int = 3, cutoff: Double = 5,
                    radialBasis: Int = 32, elements: [Int] = [14], energyScale: Double = 1) {
            self.features = features
            self.layers = layers
            self.heads = heads
            self.maxDegree = maxDegree
            self.cutoff = cutoff
            self.radialBasis = radialBasis
            self.elements = elements
            self.energyScale = energyScale
        }

        var shared: SharedHyperparameters {
            SharedHyperparameters(features: features, layers: layers, cutoff: cutoff, radialBasis: radialBasis, elements: elements, energyScale: energyScale)
        }

        public func validate() throws {
            try shared.validate("so3krates", minFeatures: 1)
            func fail(_ s: String) throws -> Never { throw PotentialSpecError(message: "so3krates: \(s)") }
            if heads < 1 { try fail("heads must be positive") }
            if !(1...3).contains(maxDegree) { try fail("max degree must be 1, 2 or 3, got \(maxDegree)") }
            if features % heads != 0 { try fail("features (\(features)) must be divisible by heads (\(heads))") }
            if features % maxDegree != 0 { try fail("features (\(features)) must be divisible by the number of degrees (\(maxDegree))") }
        }
    }

    public var parameters: OrderedDictionary<Tensor>
    public let config: Config
    /// Extra metadata (training provenance) kept in model files.
    public var provenance: [String: String] = [:]
    let species: SpeciesTable
    /// Filters computed once per undirected pair (the default) or per directed pair, as written in the paper;
    /// the two agree to rounding, and tests compare them.
    var sharesPairFilters = true

    public var kind: String { "so3krates" }
    public var cutoff: Double { config.cutoff }

    /// A freshly initialised model (LeCun-normal weights from `seed`, reference energies 0).
    public init(_ config: Config, seed: UInt64 = 0) throws {
        try config.validate()
        self.config = config
        species = SpeciesTable(config.elements)
        parameters = Self.initialParameters(config, seed: seed)
    }

    /// A model with given parameters (checked against the shapes the config implies).
    public init(_ config: Config, parameters: OrderedDictionary<Tensor>, provenance: [String: String] = [:]) throws {
        try config.validate()
        try checkShapes(parameters, against: Self.initialParameters(config, seed: 0), kind: "so3krates")
        self.config = config
        self.parameters = parameters
        self.provenance = provenance
        species = SpeciesTable(config.elements)
    }

    static func initialParameters(_ c: Config, seed: UInt64) -> OrderedDictionary<Tensor> {
        var p = ParameterInit(seed: seed)
        let f = c.features, nd = c.maxDegree, hs = Swift.max(f / 4, 1)
        p.set("embedding", p.rng.normalTensor([c.elements.count, f]))
        for l in 0..<c.layers {
            let pre = "layers.\(l)"
            for filter in ["filter_x", "filter_chi"] {
                p.dense("\(pre).\(filter).rad0", c.radialBasis, f)
                p.dense("\(pre).\(filter).rad1", f, f)
                p.dense("\(pre).\(filter).sph0", nd, hs)
                p.dense("\(pre).\(filter).sph1", hs, f)
            }
            for name in ["att_x.q", "att_x.k", "att_x.v", "att_chi.q", "att_chi.k"] { p.dense("\(pre).\(name)", f, f, bias: false) }
            p.dense("\(pre).exchange", f + nd, f + nd)
        }
        p.dense("readout.0", f, f)
        p.dense("readout.1", f, 1, gain: 0.1)
        p.set("atomic_energies", Tensor.zeros([c.elements.count]))
        return p.parameters
    }

    public var metadata: [String: String] {
        var m = config.shared.metadata(basis: "physnet", provenance: provenance)
        m["heads"] = "\(config.heads)"
        m["degrees"] = (1...config.maxDegree).map(String.init).joined(separator: ",")
        return m
    }

    static func load(_ p: OrderedDictionary<Tensor>, _ m: [String: String]) throws -> any Potential {
        let degrees = try (m["degrees"] ?? "").split(separator: ",").map { s -> Int in
            guard let d = Int(s) else { throw PotentialSpecError(message: "so3krates model file: bad degrees '\(m["degrees"] ?? "")'") }
            return d
        }
        guard let maxDeg = degrees.max(), degrees == Array(1...maxDeg) else {
            throw PotentialSpecError(message: "so3krates model file: degrees must be 1…L, got '\(m["degrees"] ?? "")'")
        }
        let h = try SharedHyperparameters.read(m, kind: "so3krates", basis: "physnet")
        let config = Config(features: h.features, layers: h.layers, heads: try hyper(m, "heads", "so3krates"), maxDegree: maxDeg,
                            cutoff: h.cutoff, radialBasis: h.radialBasis, elements: h.elements, energyScale: h.energyScale)
        let known = SharedHyperparameters.keys.union(["heads", "degrees"])
        return try SO3krates(config, parameters: p, provenance: m.filter { !known.contains($0.key) })
    }

    /// The constant linear maps of one model size as column groups: per-head sums and expansions, per-degree
    /// sums, expansions to the 2l+1 components of each degree, and the degree contraction c_l.
    struct Maps {
        let headSum: ColumnGroups, headExpand: ColumnGroups
        let degreeSum: ColumnGroups, degreeExpand: ColumnGroups
        let contraction: ColumnGroups
        let components: Int

        init(_ c: Config) {
            let f = c.features, h = c.heads, nd = c.maxDegree
            components = SphericalHarmonics.componentCount(maxDegree: nd)
            let fh = f / h, fd = f / nd
            headSum = ColumnGroups(count: h, size: fh, weight: 1 / Double(fh).squareRoot())
            headExpand = ColumnGroups(count: h, size: fh)
            degreeSum = ColumnGroups(count: nd, size: fd, weight: 1 / Double(fd).squareRoot())
            // Components are ordered by degree (SphericalHarmonics.degrees): 2l+1 consecutive columns each.
            let sizes = (1...nd).map { 2 * $0 + 1 }
            degreeExpand = ColumnGroups(sizes: sizes)
            contraction = ColumnGroups(sizes: sizes, weights: sizes.map { 1 / Double($0).squareRoot() })
        }
    }

    public func energies(_ system: AtomicSystem, positions: Variable, cells: Variable, parameters p: [String: Variable]) -> Variable {
        let c = config
        let n = system.atomCount
        let maps = Maps(c)
        let spec = species.indices(system.numbers, model: "so3krates")
        var x = p["embedding"]!.gatherRows(spec)
        let geo = PairGeometry(system, positions: positions, cells: cells, cutoff: c.cutoff)
        let sys = geo.system
        let ii = sys.pairs.first, jj = sys.pairs.second
        if sys.pairs.pairCount > 0 && c.layers > 0 {
            let unit = geo.vectors / geo.distances
            // Filters depend on the pair only symmetrically (distance, contracted |χ_j − χ_i|²): computed once
            // per undirected pair and gathered for both directions, which halves the filter networks' cost.
            let (reps, repOf) = filterPairs(sys.pairs, shared: sharesPairFilters)
            let iiU = reps.map { ii[$0] }, jjU = reps.map { jj[$0] }
            let rbf = physNetBasis(geo.distances.gatherRows(reps), cutoff: c.cutoff, count: c.radialBasis)
            let y = SphericalHarmonics.evaluate(unit, maxDegree: c.maxDegree)
            let cut = geo.cutoffWeights
            var chi = Variable(constant: Tensor.zeros([n, maps.components]))
            for l in 0..<c.layers {
                let pre = "layers.\(l)"
                // Filters (Eq. 20) from the radial basis and the contracted EV differences.
                let dchi = chi.gatherRows(jjU) - chi.gatherRows(iiU)
                let cPair = dchi.squared().sumColumnGroups(maps.contraction)
                func filter(_ name: String) -> Variable {
                    dense(dense(rbf, p, "\(pre).\(name).rad0").silu(), p, "\(pre).\(name).rad1")
                        + dense(dense(cPair, p, "\(pre).\(name).sph0").silu(), p, "\(pre).\(name).sph1")
                }
                let wx = filter("filter_x"), wchi = filter("filter_chi")
                // Invariant attention, H heads, no softmax (Eqs. 15, 21).
                let q = matmul(x, p["\(pre).att_x.q.weight"]!), k = matmul(x, p["\(pre).att_x.k.weight"]!)
                let v = matmul(x, p["\(pre).att_x.v.weight"]!)
                let alpha = gatheredProduct([GatheredFactor(q, ii), GatheredFactor(wx, repOf), GatheredFactor(k, jj)]).sumColumnGroups(maps.headSum) * cut
                let dx = gatheredProduct([GatheredFactor(alpha.repeatColumnGroups(maps.headExpand)), GatheredFactor(v, jj)], scatterInto: ii, count: n)
                // Equivariant attention, one head per degree, values Y_lm(r̂_ij) (Eq. 26).
                let q2 = matmul(x, p["\(pre).att_chi.q.weight"]!), k2 = matmul(x, p["\(pre).att_chi.k.weight"]!)
                let alpha2 = gatheredProduct([GatheredFactor(q2, ii), GatheredFactor(wchi, repOf), GatheredFactor(k2, jj)]).sumColumnGroups(maps.degreeSum) * cut
                let dchiAtom = gatheredProduct([GatheredFactor(alpha2.repeatColumnGroups(maps.degreeExpand)), GatheredFactor(y)], scatterInto: ii, count: n)
                x = x + dx
                chi = chi + dchiAtom
                // Exchange block (Eq. 25): mixes x with the invariants of χ and gates each degree.
                let ab = dense(Variable.concatenate([x, chi.squared().sumColumnGroups(maps.contraction)], axis: 1), p, "\(pre).exchange")
                x = x + ab.slice(axis: 1, 0..<c.features)
                chi = chi + ab.slice(axis: 1, c.features..<(c.features + c.maxDegree)).repeatColumnGroups(maps.degreeExpand) * chi
            }
        }
        let atomE = dense(dense(x, p, "readout.0").silu(), p, "readout.1") * c.energyScale
            + p["atomic_energies"]!.gatherRows(spec).reshaped([n, 1])
        return system.sumPerStructure(atomE)
    }
}
