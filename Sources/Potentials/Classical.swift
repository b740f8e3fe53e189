import Atoms
import Tape

/// Per-pair values [P] summed into per-structure values [S].
func sumPairsPerStructure(_ v: Variable, _ system: AtomicSystem) -> Variable {
    if system.structureCount == 1 { return v.sum().reshaped([1]) }
    return v.scatterAddRows(system.pairStructure, count: system.structureCount)
}

/// Lennard-Jones as ASE's `LennardJones`: u(r) = 4ε[(σ/r)¹² − (σ/r)⁶] per pair within rc; with `smooth`,
/// u is multiplied by S(r²) = (rc² − r²)²(rc² + 2r² − 3ro²)/(rc² − ro²)³ on ro < r < rc (the JAX-MD /
/// HOOMD cutoff ASE uses), else shifted so that u(rc) = 0. Trainable: sigma, epsilon.
public struct LennardJones: Potential {
    public var parameters = OrderedDictionary<Tensor>()
    public var rc: Double
    public var ro: Double
    public var smooth: Bool
    public var kind: String { "lj" }
    public var cutoff: Double { rc }

    public init(sigma: Double = 1, epsilon: Double = 1, rc: Double? = nil, ro: Double? = nil, smooth: Bool = false) {
        parameters["sigma"] = Tensor(scalar: sigma)
        parameters["epsilon"] = Tensor(scalar: epsilon)
        self.rc = rc ?? 3 * sigma
        self.ro = ro ?? 0.66 * (rc ?? 3 * sigma)
        self.smooth = smooth
    }

    public var metadata: [String: String] {
        ["rc": "\(rc)", "ro": "\(ro)", "smooth": smooth ? "true" : "false"]
    }

    public func energies(_ system: AtomicSystem, positions: Variable, cells: Variable, parameters p: [String: Variable]) -> Variable {
        let sys = system.within(rc, positions: positions.value, cells: cells.value)
        guard sys.pairs.pairCount > 0 else { return Variable(constant: Tensor.zeros([system.structureCount])) }
        let sigma = p["sigma"]!, eps = p["epsilon"]!
        let r2 = sys.pairVectors(positions: positions, cells: cells).squared().sum(axis: -1)
        let c6 = (sigma * sigma / r2).pow(3)
        var u = (c6 * c6 - c6) * (eps * 4)
        if smooth {
            let rc2 = rc * rc, ro2 = ro * ro
            let inner = r2.value.map { $0 < ro2 ? 1 : 0 }
            let d = rc2 - r2
            let s = d * d * (r2 * 2 + (rc2 - 3 * ro2)) * (1 / ((rc2 - ro2) * (rc2 - ro2) * (rc2 - ro2)))
            u = u * select(inner, Variable(constant: 1), s)
        } else {
            let sr6 = (sigma * sigma / (rc * rc)).pow(3)
            u = u - (sr6 * sr6 - sr6) * (eps * 4)
        }
        // Each unordered pair appears twice in the directed list.
        return sumPairsPerStructure(u * 0.5, sys)
    }
}

/// Stillinger–Weber silicon (Phys. Rev. B 31, 5262 (1985)):
/// E = Σ_{i<j} εA(B(r/σ)^−p − (r/σ)^−q) e^{1/(r/σ−a)} + Σ_i Σ_{j<k} ελ e^{γ/(r_ij/σ−a) + γ/(r_ik/σ−a)} (cos θ_jik − cos θ₀)²,
/// both terms for r < aσ. Trainable: epsilon, sigma, A, B, lambda, gamma; a, p, q, cos θ₀ are fixed.
/// `cosEpsilon` adds a constant to both bond lengths inside cos θ (JAX-MD uses 1e-7); 0 is the exact form.
public struct StillingerWeber: Potential {
    public var parameters = OrderedDictionary<Tensor>()
    public var a: Double
    public var p: Double
    public var q: Double
    public var cosTheta0: Double
    public var cosEpsilon: Double
    public var kind: String { "sw" }

    /// Original 1985 constants with ε = 2.16826 eV (JAX-MD's conversion of 50 kcal/mol).
    public init(epsilon: Double = 2.16826, sigma: Double = 2.0951, A: Double = 7.049556277, B: Double = 0.6022245584,
                lambda: Double = 21.0, gamma: Double = 1.20, a: Double = 1.80, p: Double = 4, q: Double = 0,
                cosTheta0: Double = -1.0 / 3.0, cosEpsilon: Double = 0) {
        parameters["epsilon"] = Tensor(scalar: epsilon)
        parameters["sigma"] = Tensor(scalar: sigma)
        parameters["A"] = Tensor(scalar: A)
        parameters["B"] = Tensor(scalar: B)
        parameters["lambda"] = Tensor(scalar: lambda)
        parameters["gamma"] = Tensor(scalar: gamma)
        self.a = a
        self.p = p
        self.q = q
        self.cosTheta0 = cosTheta0
        self.cosEpsilon = cosEpsilon
    }

    public var cutoff: Double { a * parameters["sigma"]!.scalar }

    public var metadata: [String: String] {
        ["a": "\(a)", "p": "\(p)", "q": "\(q)", "cos_theta0": "\(cosTheta0)", "cos_epsilon": "\(cosEpsilon)"]
    }

    public func energies(_ system: AtomicSystem, positions: Variable, cells: Variable, parameters par: [String: Variable]) -> Variable {
        let sigma = par["sigma"]!, eps = par["epsilon"]!
        let sys = system.within(a * sigma.scalar, positions: positions.value, cells: cells.value)
        guard sys.pairs.pairCount > 0 else { return Variable(constant: Tensor.zeros([system.structureCount])) }
        let d = sys.pairVectors(positions: positions, cells: cells)
        let r = d.norm()
        let x = r / sigma
        let xa = x - a
        // Two-body, per directed pair with weight 1/2.
        var poly = x.pow(-p) * par["B"]!
        poly = q == 0 ? poly - 1 : poly - x.pow(-q)
        let phi2 = poly * (1.0 / xa).exp() * (eps * par["A"]!)
        var e = sumPairsPerStructure(phi2 * 0.5, sys)

        // Three-body: unordered pairs of bonds (j, k) around each center i.
        let (tj, tk) = Self.triplets(sys.pairs)
        if !tj.isEmpty {
            let eb = (par["gamma"]! / xa).exp()
            let dj = d.gatherRows(tj), dk = d.gatherRows(tk)
            var rj = r.gatherRows(tj), rk = r.gatherRows(tk)
            if cosEpsilon != 0 { rj = rj + cosEpsilon; rk = rk + cosEpsilon }
            let cosine = rowDot(dj, dk) / (rj * rk)
            let h = eb.gatherRows(tj) * eb.gatherRows(tk) * (cosine - cosTheta0).squared() * (eps * par["lambda"]!)
            if sys.structureCount == 1 {
                e = e + h.sum().reshaped([1])
            } else {
                e = e + h.scatterAddRows(tj.map { sys.pairStructure[$0] }, count: sys.structureCount)
            }
        }
        return e
    }

    /// Bond-index pairs (j, k), j < k, sharing a center, from a list sorted by center.
    static func triplets(_ nl: NeighborList) -> ([Int], [Int]) {
        var tj: [Int] = [], tk: [Int] = []
        for i in 0..<nl.atomCount {
            let lo = nl.offsets[i], hi = nl.offsets[i + 1]
            guard hi - lo >= 2 else { continue }
            for b1 in lo..<(hi - 1) { for b2 in (b1 + 1)..<hi { tj.append(b1); tk.append(b2) } }
        }
        return (tj, tk)
    }
}

/// Scalar parameters by name, with a clear error for a missing one or one of another shape (model files).
func scalarParameters(_ p: OrderedDictionary<Tensor>, _ names: [String], kind: String) throws -> [String: Double] {
    var out: [String: Double] = [:]
    for name in names {
        guard let t = p[name] else { throw PotentialSpecError(message: "\(kind): parameter \(name) is missing") }
        guard t.count == 1 && t.rank <= 1 else { throw PotentialSpecError(message: "\(kind): parameter \(name) must be a scalar, found shape \(t.shape)") }
        out[name] = t.array[0]
    }
    for name in p.keys where !names.contains(name) {
        throw PotentialSpecError(message: "\(kind): unexpected parameter '\(name)' (parameters: \(names.joined(separator: ", ")))")
    }
    return out
}

extension LennardJones {
    /// σ > 0, ε ≥ 0, 0 < rc ≤ the cutoff limit, and for the smooth cutoff 0 ≤ ro < rc.
    public func checkParameters() throws {
        let v = try scalarParameters(parameters, ["sigma", "epsilon"], kind: "lj")
        func fail(_ s: String) throws -> Never { throw PotentialSpecError(message: "lj: \(s)") }
        if !(v["sigma"]! > 0 && v["sigma"]!.isFinite) { try fail("sigma must be a positive length, got \(v["sigma"]!) Å") }
        if !(v["epsilon"]! >= 0 && v["epsilon"]!.isFinite) { try fail("epsilon (the well depth) must be ≥ 0, got \(v["epsilon"]!) eV") }
        if !(rc > 0 && rc.isFinite) { try fail("rc must be a positive length, got \(rc) Å") }
        if smooth && !(ro >= 0 && ro < rc) { try fail("the smooth cutoff needs 0 ≤ ro < rc, got ro = \(ro) Å, rc = \(rc) Å") }
        if !ro.isFinite { try fail("ro must be finite, got \(ro)") }
        try checkCommonParameters()
    }
}

extension StillingerWeber {
    /// σ > 0, a > 0 (the cutoff is aσ), ε, λ, γ ≥ 0, finite A, B, p, q, −1 ≤ cos θ₀ ≤ 1, cos ε ≥ 0.
    public func checkParameters() throws {
        let v = try scalarParameters(parameters, ["epsilon", "sigma", "A", "B", "lambda", "gamma"], kind: "sw")
        func fail(_ s: String) throws -> Never { throw PotentialSpecError(message: "sw: \(s)") }
        for (name, x) in v.sorted(by: { $0.key < $1.key }) where !x.isFinite { try fail("\(name) must be finite, got \(x)") }
        if !(v["sigma"]! > 0) { try fail("sigma must be a positive length, got \(v["sigma"]!) Å") }
        for name in ["epsilon", "lambda", "gamma"] where !(v[name]! >= 0) { try fail("\(name) must be ≥ 0, got \(v[name]!)") }
        if !(a > 0 && a.isFinite) { try fail("a must be positive (the cutoff is a·sigma), got \(a)") }
        if !(p.isFinite && q.isFinite) { try fail("p and q must be finite, got p = \(p), q = \(q)") }
        if !(cosTheta0 >= -1 && cosTheta0 <= 1) { try fail("cos_theta0 must be in [-1, 1], got \(cosTheta0)") }
        if !(cosEpsilon >= 0 && cosEpsilon.isFinite) { try fail("cos_epsilon must be ≥ 0, got \(cosEpsilon)") }
        try checkCommonParameters()
    }

    /// Three-body terms make the work per pair grow with the neighbour count; 1 kB per pair is a lower estimate.
    public var bytesPerPair: Double { 1024 }
}
