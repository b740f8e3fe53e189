import Atoms
import Foundation
import Tape

/// SevenNet, the scalable equivariant NequIP-type network of Y. Park, J. Kim, S. Hwang, S. Han,
/// J. Chem. Theory Comput. 20, 4857 (2024), ported to the tape for the pretrained SevenNet-0 (11Jul2024) weights
/// (`relaxft models pull sevennet-0`). Written from the paper, NequIP (S. Batzner et al., Nat. Commun. 13, 2453
/// (2022)) and a reading of the `sevenn` package (0.13.0) with e3nn 0.6.0; parameter names are the package's
/// state-dict names.
///
/// Energy of a structure (extensive): E = Σ_i [scale(Z_i)·y_i + shift(Z_i)], where y_i is a linear readout of the
/// scalar features after `layers` interaction blocks on the graph of directed edges i ← j with |r_ij| < r_c
/// (r_ij = x_j − x_i + S·cell). Each block (SevenNet's `interaction_blocks.py`):
///   sc = Linear(x);  h = Linear(x);
///   m_i = (1/√n̄) Σ_j TP_uvu(h_j, Y(r̂_ij), w(|r_ij|))        (`EdgeTensorProduct`, weights from a radial MLP)
///   x ← Gate(Linear(m) + sc)
/// with e3nn-normalised per-degree linear layers, Y the e3nn spherical harmonics of degrees 0…lmax, w an MLP of
/// trainable-frequency Bessel functions times the XPLOR cutoff, and the gate φ(scalars) ⊕ φ(gates)·(l > 0 features)
/// with φ = SiLU scaled to unit second moment. Forces and stress come from the tape. Everything runs in Double: the
/// float32 weights are widened exactly; the Wigner-3j couplings are computed in Double (the package stores them as
/// float32, which moves its float64 energies by ~1e-9 eV: see `Wigner3j`).
public struct SevenNet: Potential {
    public var parameters: OrderedDictionary<Tensor>
    public let config: Config
    public var kind: String { "sevennet" }
    public var cutoff: Double { config.cutoff }
    public var metadata: [String: String] { config.metadata }
    /// Tensor products, channel counts and gates of every interaction block.
    let blocks: [Block]
    let species: SpeciesTable

    /// Hyperparameters read from model-file metadata (written by `SevenNetWeights` from the checkpoint's config).
    public struct Config: Sendable {
        public var cutoff: Double
        /// XPLOR switching radius r_on (the cutoff function is 1 below it).
        public var cutoffOn: Double
        public var besselCount: Int
        /// Degree of the edge spherical harmonics.
        public var filterDegree: Int
        /// Channels per degree of the node features before block 0, between blocks and after the last.
        public var irreps: [[Int]]
        public var radialHidden: [Int]
        /// 1/scale of each block's aggregated messages (√ of the average neighbour count in SevenNet-0).
        public var denominators: [Double]
        /// Atomic numbers in the model's species order (its one-hot index).
        public var elements: [Int]
        public var readoutHidden: Int
        public var metadata: [String: String]

        public init(metadata m: [String: String]) throws {
            func fail(_ s: String) -> PotentialSpecError { PotentialSpecError(message: "sevennet model file: \(s)") }
            func number(_ k: String) throws -> Double {
                guard let s = m[k], let v = Double(s), v.isFinite else { throw fail("missing or invalid '\(k)'") }
                return v
            }
            func json<T>(_ k: String, as: T.Type) throws -> T {
                guard let s = m[k], let d = s.data(using: .utf8), let v = try? JSONSerialization.jsonObject(with: d) as? T else {
                    throw fail("missing or invalid '\(k)' (expected JSON \(T.self))")
                }
                return v
            }
            cutoff = try number("cutoff")
            cutoffOn = try number("cutoff_on")
            besselCount = Int(try number("radial_basis_size"))
            filterDegree = Int(try number("lmax"))
            readoutHidden = Int(try number("readout_hidden"))
            irreps = try json("irreps", as: [String].self).map { try SevenNet.parseIrreps($0) }
            radialHidden = try json("weight_nn_hidden", as: [Int].self)
            denominators = try json("conv_denominator", as: [Double].self)
            elements = try SpeciesTable.parse(m["elements"] ?? "")
            guard cutoff > 0, cutoffOn >= 0, cutoffOn < cutoff else { throw fail("need 0 ≤ cutoff_on < cutoff, got \(cutoffOn), \(cutoff)") }
            guard besselCount >= 1, (0...3).contains(filterDegree), readoutHidden >= 1 else { throw fail("invalid radial_basis_size, lmax or readout_hidden") }
            guard irreps.count >= 2, denominators.count == irreps.count - 1, denominators.allSatisfy({ $0 > 0 }) else {
                throw fail("\(irreps.count) irreps and \(denominators.count) denominators: need layers + 1 and layers, positive")
            }
            guard irreps.allSatisfy({ $0.count <= 4 && ($0.first ?? 0) > 0 }), irreps.last!.count == 1 else {
                throw fail("irreps must have scalar channels, degrees ≤ 3, and scalars only after the last block")
            }
            guard !elements.isEmpty, Set(elements).count == elements.count else { throw fail("'elements' must list distinct elements") }
            metadata = m
        }
    }

    /// One interaction block's structure.
    struct Block: Sendable {
        let input: [Int]
        let output: [Int]
        /// Channels entering the gate: output scalars plus one gate per channel of each degree l > 0, then those.
        let gateInput: [Int]
        let product: EdgeTensorProduct
    }

    public init(parameters: OrderedDictionary<Tensor>, metadata: [String: String]) throws {
        try self.init(parameters: parameters, metadata: metadata, couplingsRoundedToFloat: false)
    }

    /// `couplingsRoundedToFloat`: Wigner-3j values rounded to float32, as sevenn stores them (for tests that
    /// compare with the package to rounding).
    init(parameters: OrderedDictionary<Tensor>, metadata: [String: String], couplingsRoundedToFloat: Bool) throws {
        let c = try Config(metadata: metadata)
        config = c
        self.parameters = parameters
        species = SpeciesTable(c.elements)
        blocks = Self.layout(c, couplingsRoundedToFloat: couplingsRoundedToFloat)
        try validate()
    }

    static func layout(_ c: Config, couplingsRoundedToFloat: Bool) -> [Block] {
        (0..<(c.irreps.count - 1)).map { t in
            let input = c.irreps[t], output = c.irreps[t + 1]
            let gateInput = E3nn.gateInput(output)
            let tp = SevenNet.tensorProduct(input: input, filterDegree: c.filterDegree, outputDegree: output.count - 1,
                                            scale: 1 / c.denominators[t], roundCouplings: couplingsRoundedToFloat).product
            return Block(input: input, output: output, gateInput: gateInput, product: tp)
        }
    }

    /// "128x0e+64x1e+32x2e" → channels per degree [128, 64, 32]. Parity must be even (SevenNet-0 runs with
    /// is_parity false); each degree at most once, in increasing order.
    static func parseIrreps(_ s: String) throws -> [Int] {
        var out: [Int] = []
        for item in s.split(separator: "+") {
            let t = item.trimmingCharacters(in: .whitespaces)
            let parts = t.split(separator: "x")
            guard parts.count == 2, let mul = Int(parts[0]), mul > 0, parts[1].hasSuffix("e"), let l = Int(parts[1].dropLast()), l >= 0 else {
                throw PotentialSpecError(message: "sevennet model file: irreps item '\(t)' in '\(s)' is not 'NxLe' (only even parity is implemented)")
            }
            guard l >= out.count else { throw PotentialSpecError(message: "sevennet model file: irreps '\(s)' must list each degree once, increasing") }
            while out.count < l { out.append(0) }
            out.append(mul)
        }
        return out
    }

    /// The block's tensor product as SevenNet builds it (`nn/convolution.py`): for every input degree, filter
    /// degree and output degree l_out ≤ `outputDegree` allowed by the triangle rule, in that nested order, one
    /// path with its own output channels; the output blocks are then ordered by degree (stable), which fixes both
    /// the output channel order and the weight columns (sevenn ≥ 0.11). `checkpointOrder[p]` is the position of
    /// path p in the nested order, which is where checkpoints of older sevenn versions keep its weight columns.
    static func tensorProduct(input: [Int], filterDegree: Int, outputDegree: Int, scale: Double, roundCouplings: Bool = false)
        -> (product: EdgeTensorProduct, checkpointOrder: [Int], weightColumns: [Range<Int>]) {
        var raw: [(lIn: Int, lF: Int, lOut: Int)] = []
        for (lIn, c) in input.enumerated() where c > 0 {
            for lF in 0...filterDegree {
                for lOut in abs(lIn - lF)...(lIn + lF) where lOut <= outputDegree { raw.append((lIn, lF, lOut)) }
            }
        }
        let order = raw.indices.sorted { (raw[$0].lOut, $0) < (raw[$1].lOut, $1) }
        var outChannels = [Int](repeating: 0, count: outputDegree + 1)
        var paths: [TensorProductPath] = [], columns: [Range<Int>] = []
        var w = 0
        for k in order {
            let (lIn, lF, lOut) = raw[k], mul = input[lIn]
            paths.append(TensorProductPath(lIn: lIn, lFilter: lF, lOut: lOut, multiplicity: mul, inputOffset: 0,
                                           outputOffset: outChannels[lOut], weightOffset: w, coupling: coupling(lIn, lF, lOut, rounded: roundCouplings)))
            columns.append(w..<(w + mul))
            outChannels[lOut] += mul
            w += mul
        }
        let tp = EdgeTensorProduct(inputChannels: input, outputChannels: outChannels, filterDegree: filterDegree, weightCount: w,
                                   paths: paths, scale: scale)
        return (tp, order, columns)
    }

    /// e3nn's "uvu" coupling of one path with `irrep_normalization='component'` and `path_normalization='element'`:
    /// √(2l_out+1)·C^{l_in l_f l_out}, where e3nn's specialised code replaces C by δ/√(2l_out+1) when l_in or l_f is
    /// 0 and by δ/√(2l_in+1) when l_out is 0 (positive sign in every case).
    static func coupling(_ lIn: Int, _ lF: Int, _ lOut: Int, rounded: Bool = false) -> [Double] {
        let dIn = 2 * lIn + 1, dF = 2 * lF + 1, dOut = 2 * lOut + 1
        var k = [Double](repeating: 0, count: dIn * dF * dOut)
        func at(_ a: Int, _ b: Int, _ c: Int) -> Int { (a * dF + b) * dOut + c }
        if lIn == 0 {
            for m in 0..<dOut { k[at(0, m, m)] = 1 }
        } else if lF == 0 {
            for m in 0..<dOut { k[at(m, 0, m)] = 1 }
        } else if lOut == 0 {
            for m in 0..<dIn { k[at(m, m, 0)] = 1 / Double(dIn).squareRoot() }
        } else {
            let c = Wigner3j.symbol(lIn, lF, lOut)!, s = Double(dOut).squareRoot()
            k = c.map { (rounded ? Double(Float($0)) : $0) * s }
        }
        return k
    }

    /// Parameter names and shapes the metadata implies (in the checkpoint's order).
    static func parameterShapes(_ c: Config, blocks: [Block]) -> [(name: String, shape: [Int])] {
        var e: [(name: String, shape: [Int])] = []
        func linearCount(_ a: [Int], _ b: [Int]) -> Int { zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }
        e.append(("edge_embedding.basis_function.coeffs", [c.besselCount]))
        e.append(("onehot_to_feature_x.linear.weight", [c.elements.count * c.irreps[0][0]]))
        for (t, b) in blocks.enumerated() {
            e.append(("\(t)_self_connection_intro.linear.weight", [linearCount(b.input, b.gateInput)]))
            e.append(("\(t)_self_interaction_1.linear.weight", [linearCount(b.input, b.input)]))
            let hs = [c.besselCount] + c.radialHidden + [b.product.weightCount]
            for k in 0..<(hs.count - 1) { e.append(("\(t)_convolution.weight_nn.layer\(k).weight", [hs[k], hs[k + 1]])) }
            e.append(("\(t)_self_interaction_2.linear.weight", [linearCount(b.product.outputChannels, b.gateInput)]))
        }
        e.append(("reduce_input_to_hidden.linear.weight", [c.irreps.last![0] * c.readoutHidden]))
        e.append(("reduce_hidden_to_energy.linear.weight", [c.readoutHidden]))
        e.append(("rescale_atomic_energy.shift", [c.elements.count]))
        e.append(("rescale_atomic_energy.scale", [c.elements.count]))
        return e
    }

    /// The parameter shapes a model file with this metadata must hold.
    public static func parameterShapes(metadata: [String: String]) throws -> [(name: String, shape: [Int])] {
        let c = try Config(metadata: metadata)
        return parameterShapes(c, blocks: layout(c, couplingsRoundedToFloat: false))
    }

    func validate() throws {
        var expected = OrderedDictionary<Tensor>()
        for (name, shape) in Self.parameterShapes(config, blocks: blocks) { expected[name] = Tensor.zeros(shape) }
        try checkShapes(parameters, against: expected, kind: "sevennet")
    }

    // MARK: - Forward pass

    /// Per-structure energies [S] and per-atom energies [N]. `observe` receives the node features after the
    /// embedding ("embedding") and after each block's gate ("gate t"), per degree (for tests).
    public func forward(_ system0: AtomicSystem, positions: Variable, cells: Variable, parameters p: [String: Variable],
                        observe: ((String, [Tensor?]) -> Void)? = nil) -> (energies: Variable, atomEnergies: Variable) {
        let system = system0.within(config.cutoff, positions: positions.value, cells: cells.value)
        let n = system.atomCount
        let types = species.indices(system.numbers, model: "SevenNet")
        func w(_ name: String) -> Variable { p[name]! }

        // Graph: directed edges i ← j (center i receives), their undirected pairs (radial quantities depend on
        // |r_ij| only, so both directions share one row), and the edge geometry.
        let (representatives, pairOf) = system.pairs.undirectedPairs
        let graph = EdgeConvolutionGraph(receivers: system.pairs.first, senders: system.pairs.second, weightRows: pairOf,
                                         nodeCount: n, weightRowCount: representatives.count)
        let r = system.pairVectors(positions: positions, cells: cells)
        let length = r.gatherRows(representatives).norm(keepDims: true)
        let filter = SphericalHarmonics.evaluateE3nn(r / length.gatherRows(pairOf), maxDegree: config.filterDegree)
        let embedding = E3nn.besselBasis(length, frequencies: w("edge_embedding.basis_function.coeffs"), cutoff: config.cutoff)
            * E3nn.xplorCutoff(length, on: config.cutoffOn, cutoff: config.cutoff)

        // Species embedding: e3nn Linear of the one-hot vector, W[s, :]/√(species).
        let c0 = config.irreps[0][0]
        let table = w("onehot_to_feature_x.linear.weight").reshaped([config.elements.count, c0]) * (1 / Double(config.elements.count).squareRoot())
        var x: [Variable?] = [table.gatherRows(types)]
        observe?("embedding", x.map { $0?.value })
        for (t, b) in blocks.enumerated() {
            let sc = E3nn.linear(x, from: b.input, to: b.gateInput, weight: w("\(t)_self_connection_intro.linear.weight"), nodes: n)
            let h = E3nn.linear(x, from: b.input, to: b.input, weight: w("\(t)_self_interaction_1.linear.weight"), nodes: n)
            let weights = radialWeights(embedding, block: t, p)
            let m = b.product(h, filter: filter, weights: weights, graph: graph)
            let y = E3nn.linear(m, from: b.product.outputChannels, to: b.gateInput, weight: w("\(t)_self_interaction_2.linear.weight"), nodes: n)
            let sum: [Variable?] = zip(y, sc).map { a, s in
                guard let a else { return s }
                guard let s else { return a }
                return a + s
            }
            x = E3nn.gate(sum, output: b.output, nodes: n, activation: E3nn.normalizedSiLU)
            observe?("gate \(t)", x.map { $0?.value })
        }
        // Readout: two bias-free e3nn Linears (no activation between them), then the per-species affine map.
        let cLast = config.irreps.last![0], hidden = config.readoutHidden
        let wa = w("reduce_input_to_hidden.linear.weight").reshaped([cLast, hidden]) * (1 / Double(cLast).squareRoot())
        let wb = w("reduce_hidden_to_energy.linear.weight").reshaped([hidden, 1]) * (1 / Double(hidden).squareRoot())
        let out = matmul(matmul(x[0]!, wa), wb)
        let atomEnergies = out * w("rescale_atomic_energy.scale").reshaped([-1, 1]).gatherRows(types)
            + w("rescale_atomic_energy.shift").reshaped([-1, 1]).gatherRows(types)
        return (system.sumPerStructure(atomEnergies), atomEnergies.reshaped([n]))
    }

    public func energies(_ system: AtomicSystem, positions: Variable, cells: Variable, parameters: [String: Variable]) -> Variable {
        forward(system, positions: positions, cells: cells, parameters: parameters).energies
    }

    /// The radial MLP of block t (e3nn `FullyConnectedNet`): [pairs, weightCount].
    func radialWeights(_ embedding: Variable, block t: Int, _ p: [String: Variable]) -> Variable {
        let weights = (0...config.radialHidden.count).map { p["\(t)_convolution.weight_nn.layer\($0).weight"]! }
        return E3nn.fullyConnected(embedding, weights: weights, activation: E3nn.normalizedSiLU)
    }
}

extension SevenNet {
    /// Energies, forces, stresses (optional) and per-atom energies with the model's own weights.
    public func predict(_ system: AtomicSystem, positions: Tensor, cells: Tensor, stress: Bool = false) -> (evaluation: Evaluation, atomEnergies: Tensor) {
        let tape = Tape()
        let x = tape.variable(positions)
        let s = system.structureCount
        let c = Variable(constant: cells.reshaped([s, 3, 3]))
        let eps = tape.variable(Tensor.zeros([s, 3, 3]))
        let (xs, cs) = stress ? Self.strained(system, positions: x, cells: c, strain: eps) : (x, c)
        let out = forward(system, positions: xs, cells: cs, parameters: constantParameters)
        let g = tape.gradient(of: out.energies.sum(), wrt: [x, eps])
        let ev = Evaluation(energies: out.energies.value, forces: -g[0].value,
                            stresses: stress ? Self.stressFromVirial(g[1].value, cells: cells) : nil)
        return (ev, out.atomEnergies.value)
    }
}
