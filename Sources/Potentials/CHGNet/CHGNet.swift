import Atoms
import Foundation
import Tape

/// CHGNet, the Crystal Hamiltonian Graph neural Network of B. Deng et al., Nat. Mach. Intell. 5, 1031 (2023),
/// ported to the tape for the pretrained 0.3.0 weights (`relaxft models pull chgnet-0.3.0`). Written from the
/// paper and a reading of the `chgnet` package (0.4.2); parameter names are the package's state-dict names.
///
/// Energy of a structure with N atoms (CHGNet predicts E/N; relaxft works with the total):
///   E = Σ_i [ MLP(LayerNorm(v_i⁽⁴⁾)) + e_ref(Z_i) ]
/// where v_i⁽⁴⁾ are atom features after 4 interaction blocks on the atom graph (bonds < 6 Å) and the bond graph
/// (pairs of bonds < 3 Å sharing an atom, carrying angles), and e_ref are the per-element AtomRef energies.
/// Forces and stress come from the tape. Everything runs in Double: the float32 weights are widened exactly.
public struct CHGNet: Potential {
    public var parameters: OrderedDictionary<Tensor>
    public let config: Config
    public var kind: String { "chgnet" }
    public var cutoff: Double { config.atomCutoff }
    public var metadata: [String: String] { config.metadata }

    /// Hyperparameters (the checkpoint's `model_args`) this port reads.
    public struct Config: Sendable {
        public var atomCutoff: Double
        public var bondCutoff: Double
        /// Exponent p of the smooth cutoff polynomial (cutoff_coeff).
        public var cutoffCoeff: Int
        public var nConv: Int
        /// All of model_args, written back to model files unchanged.
        public var metadata: [String: String]

        /// Reads model_args from model-file metadata; options outside what this port implements are errors.
        public init(metadata m: [String: String]) throws {
            func number(_ k: String) throws -> Double {
                guard let s = m[k], let v = Double(s) else { throw PotentialSpecError(message: "chgnet model file: missing or invalid '\(k)'") }
                return v
            }
            atomCutoff = try number("atom_graph_cutoff")
            bondCutoff = try number("bond_graph_cutoff")
            cutoffCoeff = Int(try number("cutoff_coeff"))
            nConv = Int(try number("n_conv"))
            let required: [(String, String)] = [("non_linearity", "silu"), ("gMLP_norm", "layer"), ("readout_norm", "layer"),
                                                ("mlp_first", "true"), ("update_bond", "true"), ("update_angle", "true")]
            for (k, v) in required where m[k] != v {
                throw PotentialSpecError(message: "chgnet model file: \(k) = \(m[k] ?? "missing"); this port implements \(k) = \(v) (as in CHGNet 0.3.0)")
            }
            if let c = m["conv_norm"], c != "null" {
                throw PotentialSpecError(message: "chgnet model file: conv_norm = \(c) is not implemented")
            }
            guard nConv >= 1, atomCutoff > 0, bondCutoff > 0, bondCutoff <= atomCutoff else {
                throw PotentialSpecError(message: "chgnet model file: inconsistent n_conv or cutoffs")
            }
            metadata = m
        }
    }

    /// Linear-layer indices of each MLP (`<prefix>.layers.<k>`), from the parameter names: the state dict decides
    /// the structure (e.g. hidden_dim 0 gives one Linear at index 1, an int hidden dim two at 0 and 3).
    let mlpLayers: [String: [Int]]

    public init(parameters: OrderedDictionary<Tensor>, metadata: [String: String]) throws {
        config = try Config(metadata: metadata)
        self.parameters = parameters
        var layers: [String: [Int]] = [:]
        for name in parameters.keys {
            // "<prefix>.layers.<k>.weight"
            let parts = name.split(separator: ".")
            guard parts.count >= 3, parts.last == "weight", parts[parts.count - 3] == "layers", let k = Int(parts[parts.count - 2]) else { continue }
            layers[parts.dropLast(3).joined(separator: "."), default: []].append(k)
        }
        mlpLayers = layers.mapValues { $0.sorted() }
        try validate()
    }

    /// Checks that every tensor the forward pass uses is present with a consistent shape.
    func validate() throws {
        func need(_ name: String, _ rank: Int) throws -> [Int] {
            guard let t = parameters[name] else { throw PotentialSpecError(message: "chgnet model file: tensor '\(name)' missing") }
            guard t.rank == rank else { throw PotentialSpecError(message: "chgnet model file: '\(name)' has shape \(t.shape)") }
            return t.shape
        }
        let emb = try need("atom_embedding.embedding.weight", 2)
        let radial = try need("bond_basis_expansion.rbf_expansion_ag.frequencies", 1)[0]
        _ = try need("bond_basis_expansion.rbf_expansion_bg.frequencies", 1)
        let fourier = try need("angle_basis_expansion.fourier_expansion.frequencies", 1)[0]
        let comp = try need("composition_model.fc.weight", 2)
        guard comp == [1, emb[0]] else { throw PotentialSpecError(message: "chgnet model file: composition_model.fc.weight has shape \(comp)") }
        for n in ["bond_embedding", "bond_weights_ag", "bond_weights_bg"] where try need(n + ".weight", 2)[1] != radial {
            throw PotentialSpecError(message: "chgnet model file: \(n).weight does not match num_radial \(radial)")
        }
        guard try need("angle_embedding.weight", 2)[1] == 1 + 2 * fourier else {
            throw PotentialSpecError(message: "chgnet model file: angle_embedding.weight does not match 2·\(fourier)+1 angular bases")
        }
        var mlps = ["mlp"]
        for l in 0..<config.nConv {
            mlps += ["atom_conv_layers.\(l).twoBody_atom.mlp_core", "atom_conv_layers.\(l).twoBody_atom.mlp_gate", "atom_conv_layers.\(l).mlp_out"]
            if l < config.nConv - 1 {
                for g in ["bond_conv_layers.\(l).twoBody_bond", "angle_layers.\(l).twoBody_bond"] { mlps += [g + ".mlp_core", g + ".mlp_gate"] }
                mlps.append("bond_conv_layers.\(l).mlp_out")
            }
        }
        for m in mlps where (mlpLayers[m] ?? []).isEmpty { throw PotentialSpecError(message: "chgnet model file: no layers of '\(m)'") }
        for n in ["readout_norm.weight", "readout_norm.bias"] { _ = try need(n, 1) }
    }

    // MARK: - Forward pass

    /// Energies [S], plus site energies [N, 1] (including the AtomRef shift) and, on request, the magnetic
    /// moments [N] (|Linear(atom features)| after the third interaction block, in μB).
    /// One function on purpose: it follows the reference implementation's forward pass block by block, so that
    /// the two can be read side by side (Deng et al., Nat. Mach. Intell. 5, 1031 (2023); chgnet 0.3.0 model.py).
    public func forward(_ system: AtomicSystem, positions: Variable, cells: Variable, parameters p: [String: Variable],
                        magmoms wantMagmoms: Bool = false) -> (energies: Variable, siteEnergies: Variable, magmoms: Variable?) {
        let g = CHGNetGraph.build(system, positions: positions.value, cells: cells.value,
                                  atomCutoff: config.atomCutoff, bondCutoff: config.bondCutoff)
        let n = system.atomCount
        func w(_ name: String) -> Variable { p[name]! }
        func b(_ name: String) -> Variable? { p[name] }
        let elements = system.numbers.map { z -> Int in
            precondition(z >= 1 && z <= parameters["composition_model.fc.weight"]!.shape[1], "CHGNet covers Z = 1…\(parameters["composition_model.fc.weight"]!.shape[1]), got Z = \(z)")
            return z - 1
        }

        // Geometry. relaxft's r_ij = x_j − x_i + S·L points from center to neighbour; CHGNet's bond vectors are
        // the opposite (center − neighbour), which changes neither lengths nor angles.
        let r = g.system.pairVectors(positions: positions, cells: cells)
        let length = r.gatherRows(g.representative).norm(axis: -1, keepDims: true) // [U, 1]

        // Bond basis: learnable-frequency Bessel functions √(2/rc)·sin(f_n·d/rc)/d times the smooth
        // cutoff polynomial u(d/rc) = 1 − ((p+1)(p+2)/2)x^p + p(p+2)x^(p+1) − (p(p+1)/2)x^(p+2), for the atom graph
        // (rc = 6 Å) and, on bonds < 3 Å, the bond graph (rc = 3 Å). All lengths are below rc, so u's
        // "zero beyond rc" branch is never needed.
        let basisAG = radialBasis(length, frequencies: w("bond_basis_expansion.rbf_expansion_ag.frequencies"), cutoff: config.atomCutoff)
        let basisBG = radialBasis(length.gatherRows(g.shortBonds), frequencies: w("bond_basis_expansion.rbf_expansion_bg.frequencies"),
                                  cutoff: config.bondCutoff)

        // Angle basis: θ between the two bonds of each bond-graph row, expanded as
        // [1/√2, sin(f_k θ), cos(f_k θ)]/√π with learnable f_k. CHGNet scales cos θ by (1 − 10⁻⁶) before arccos.
        var angleBasis: Variable? = nil
        if g.angleCount > 0 {
            let v1 = r.gatherRows(g.angleEdge1), v2 = r.gatherRows(g.angleEdge2)
            let u1 = v1 / v1.norm(axis: -1, keepDims: true), u2 = v2 / v2.norm(axis: -1, keepDims: true)
            let theta = (rowDot(u1, u2) * (1 - 1e-6)).acos().reshaped([g.angleCount, 1])
            let f = w("angle_basis_expansion.fourier_expansion.frequencies")
            let tf = theta * f.reshaped([1, f.count])
            let constant = Variable(constant: Tensor(shape: [g.angleCount, 1], repeating: 1 / 2.0.squareRoot()))
            angleBasis = Variable.concatenate([constant, tf.sin(), tf.cos()], axis: 1) / Variable(constant: Tensor(scalar: Double.pi.squareRoot()))
        }

        // Embeddings: atoms by element, bonds and angles by linear maps of their bases; the bond weights that
        // smooth every message are further linear maps of the same bases.
        var atoms = w("atom_embedding.embedding.weight").gatherRows(elements)
        var bonds = basisAG.linear(w("bond_embedding.weight"), nil)
        let bondWeightsAG = basisAG.linear(w("bond_weights_ag.weight"), nil)
        let bondWeightsBG = basisBG.linear(w("bond_weights_bg.weight"), nil)
        var angles = angleBasis.map { $0.linear(w("angle_embedding.weight"), nil) }
        let center = g.system.pairs.first, neighbour = g.system.pairs.second
        let edgeBondWeight = bondWeightsAG.gatherRows(g.undirectedOfEdge)

        /// Atom convolution: v_i ← v_i + L(Σ_j φ(v_i ‖ e_ij ‖ v_j) ⊙ w_ag(e_ij)) over directed edges from i.
        func atomConv(_ l: Int) {
            let pre = "atom_conv_layers.\(l)."
            let m = gatedMLP(pre + "twoBody_atom", [(atoms, center), (bonds, g.undirectedOfEdge), (atoms, neighbour)], weight: edgeBondWeight, p)
            atoms = mlp(pre + "mlp_out", [(m.scatterAddRows(center, count: n), nil)], p) + atoms
        }
        // The bond-graph messages of both bonds are weighted by w_bg(e_ij) ⊙ w_bg(e_ik); the same in every block.
        let angleBondWeight = angles == nil ? nil : bondWeightsBG.gatherRows(g.angleBond1) * bondWeightsBG.gatherRows(g.angleBond2)
        var magmoms: Variable? = nil
        for l in 0..<(config.nConv - 1) {
            atomConv(l)
            if let a = angles {
                // Bond convolution: e_ij ← e_ij + L(Σ_k φ(e_ij ‖ e_ik ‖ a_jik ‖ v_i) ⊙ w_bg(e_ij) ⊙ w_bg(e_ik)),
                // summed over the bond-graph rows of e_ij. Only bonds < 3 Å change (the aggregate of the others is 0
                // and the output Linear has no bias), so the update runs on those and is scattered back.
                let pre = "bond_conv_layers.\(l)."
                let short = bonds.gatherRows(g.shortBonds)
                let m = gatedMLP(pre + "twoBody_bond", [(short, g.angleBond1), (short, g.angleBond2), (a, nil), (atoms, g.angleCenter)],
                                 weight: angleBondWeight, p)
                let delta = mlp(pre + "mlp_out", [(m.scatterAddRows(g.angleBond1, count: g.shortBonds.count), nil)], p)
                bonds = bonds + delta.scatterAddRows(g.shortBonds, count: g.bondCount)
                // Angle update: a_jik ← a_jik + φ(e_ij ‖ e_ik ‖ a_jik ‖ v_i) with the updated bonds.
                // Port decision: CHGNet also runs the last block's angle update, whose output nothing reads (the
                // final atom convolution uses atoms and bonds only); it is skipped here (its weights get zero
                // gradient either way, and in 0.3.0 its layer norms still hold their initial values 1 and 0).
                if l < config.nConv - 2 {
                    let short2 = bonds.gatherRows(g.shortBonds)
                    angles = gatedMLP("angle_layers.\(l).twoBody_bond", [(short2, g.angleBond1), (short2, g.angleBond2), (a, nil), (atoms, g.angleCenter)],
                                      weight: nil, p) + a
                }
            }
            if l == config.nConv - 2 && wantMagmoms {
                magmoms = atoms.linear(w("site_wise.weight"), b("site_wise.bias")).abs().reshaped([n])
            }
        }
        atomConv(config.nConv - 1)

        // Readout: per-atom energies from an MLP on layer-normalised atom features (mlp_first), plus AtomRef.
        // (CHGNet freezes the AtomRef weights during its own training; here they are parameters like the others,
        // and a fine-tuning run decides which parameters it trains.)
        let features = atoms.layerNorm(weight: w("readout_norm.weight"), bias: w("readout_norm.bias"))
        let reference = w("composition_model.fc.weight").reshaped([-1, 1]).gatherRows(elements)
        let site = mlp("mlp", [(features, nil)], p) + reference
        return (system.sumPerStructure(site), site, magmoms)
    }

    public func energies(_ system: AtomicSystem, positions: Variable, cells: Variable, parameters: [String: Variable]) -> Variable {
        forward(system, positions: positions, cells: cells, parameters: parameters).energies
    }

    /// The Bessel basis times the smooth cutoff envelope, [B, num_radial] for lengths [B, 1].
    func radialBasis(_ d: Variable, frequencies f: Variable, cutoff rc: Double) -> Variable {
        // Constants as CHGNet forms them: inv_cutoff = 1/rc and norm_const = (2·inv_cutoff)^0.5.
        let inv = 1 / rc
        let sines = (d * inv * f.reshaped([1, f.count])).sin()
        let bessel = sines * Foundation.pow(2 * inv, 0.5) / d
        let p = Double(config.cutoffCoeff)
        let x = d / Variable(constant: Tensor(scalar: rc))
        let xp = x.pow(p)
        let envelope = 1 + xp * (-(p + 1) * (p + 2) / 2) + xp * x * (p * (p + 2)) + xp * x * x * (-p * (p + 1) / 2)
        return envelope * bessel
    }

    /// An MLP `<prefix>.layers.k` (Linear layers with SiLU between them, none after the last), whose input is
    /// the row-wise concatenation of `blocks`, each gathered by its index (or taken as is when nil).
    ///
    /// Port decision: the first Linear is applied to each block before the gather, Σ_k (X_k W_kᵀ)[index_k] + b,
    /// instead of to the concatenated rows: the same sum in a different order, and several times fewer
    /// operations because atoms and bonds are fewer than the edges and bond-graph rows that gather them.
    func mlp(_ prefix: String, _ blocks: [(x: Variable, index: [Int]?)], _ p: [String: Variable]) -> Variable {
        let layers = mlpLayers[prefix]!
        func weight(_ k: Int) -> Variable { p["\(prefix).layers.\(layers[k]).weight"]! }
        func bias(_ k: Int) -> Variable? { p["\(prefix).layers.\(layers[k]).bias"] }
        var h: Variable
        var done: Int  // layers applied so far (the last one's activation pending)
        if blocks.count > 1 || blocks[0].index != nil {
            let wt = weight(0)
            var col = 0
            var parts: [(x: Variable, index: [Int]?)] = []
            for (x, index) in blocks {
                let width = x.shape[1]
                parts.append((x.linear(wt.slice(axis: 1, col..<(col + width)), nil), index))
                col += width
            }
            precondition(col == wt.shape[1], "\(prefix): input width \(col), weight \(wt.shape)")
            if layers.count >= 2 {
                // The first two layers in one operation: the hidden [pairs, width] activations are not stored.
                h = gatheredMLP(parts, bias: bias(0), weight: weight(1), bias2: bias(1))
                done = 2
            } else {
                h = gatheredSum(parts, bias: bias(0))
                done = 1
            }
        } else {
            h = blocks[0].x.linear(weight(0), bias(0))
            done = 1
        }
        while done < layers.count {
            h = h.silu().linear(weight(done), bias(done))
            done += 1
        }
        return h
    }

    /// Gated MLP (CHGNet's GatedMLP with layer norm), SiLU(LN₁(core(x))) ⊙ σ(LN₂(gate(x))), times the message
    /// weight when one is given.
    func gatedMLP(_ prefix: String, _ blocks: [(x: Variable, index: [Int]?)], weight: Variable?, _ p: [String: Variable]) -> Variable {
        gatedNorm(core: mlp(prefix + ".mlp_core", blocks, p), p[prefix + ".bn1.weight"]!, p[prefix + ".bn1.bias"]!,
                  gate: mlp(prefix + ".mlp_gate", blocks, p), p[prefix + ".bn2.weight"]!, p[prefix + ".bn2.bias"]!, weight: weight)
    }
}

extension CHGNet {
    /// Energies, forces, stresses (optional), site energies and magnetic moments with the model's own weights.
    public struct Prediction: Sendable {
        public var evaluation: Evaluation
        /// Per-atom energies (eV), the site MLP output plus the element's reference energy.
        public var siteEnergies: Tensor
        /// Magnetic moment magnitudes (μB).
        public var magmoms: Tensor
    }

    public func predict(_ system: AtomicSystem, positions: Tensor, cells: Tensor, stress: Bool = false) -> Prediction {
        let tape = Tape()
        let x = tape.variable(positions)
        let s = system.structureCount
        let c = Variable(constant: cells.reshaped([s, 3, 3]))
        let eps = tape.variable(Tensor.zeros([s, 3, 3]))
        let (xs, cs) = stress ? Self.strained(system, positions: x, cells: c, strain: eps) : (x, c)
        let out = forward(system, positions: xs, cells: cs, parameters: constantParameters, magmoms: true)
        let g = tape.gradient(of: out.energies.sum(), wrt: [x, eps])
        let ev = Evaluation(energies: out.energies.value, forces: -g[0].value,
                            stresses: stress ? Self.stressFromVirial(g[1].value, cells: cells) : nil)
        return Prediction(evaluation: ev, siteEnergies: out.siteEnergies.value.reshaped([system.atomCount]), magmoms: out.magmoms!.value)
    }
}
