import Atoms
import Tape

// What the learned potentials cover and cost per pair, for the checks callers run before evaluating
// (`Potential.checkInput`): an element outside a model's list would have no embedding row.

extension SO3krates {
    public var coveredElements: Set<Int>? { config.shared.coveredElements }
    public var bytesPerPair: Double { 3 * config.shared.bytesPerPair }  // two filters and the spherical harmonics per pair
    public func checkParameters() throws {
        try config.validate()
        try checkCommonParameters()
    }
}

extension SchNet {
    public var coveredElements: Set<Int>? { config.shared.coveredElements }
    public var bytesPerPair: Double { config.shared.bytesPerPair }
    public func checkParameters() throws {
        try config.validate()
        try checkCommonParameters()
    }
}

extension SevenNet {
    /// The species of the checkpoint (metadata `elements`, its one-hot order).
    public var coveredElements: Set<Int>? { Set(config.elements) }
    /// Per edge, kept for the backward pass: the radial basis and spherical harmonics, and per block the radial
    /// network's activations with the tensor-product weights it produces (values and gradients; a lower estimate).
    public var bytesPerPair: Double {
        let radial = blocks.map { b in Double(config.radialHidden.reduce(0, +) + b.product.weightCount) }.max() ?? 0
        return 8 * (Double(config.besselCount) + 16 + 2 * radial)
    }
    public func checkParameters() throws {
        try validate()
        try checkCommonParameters()
    }
}

extension CHGNet {
    /// Z = 1…n, n the columns of the AtomRef (composition model) weights: 94 (H–Pu) for CHGNet 0.3.0.
    public var coveredElements: Set<Int>? {
        guard let w = parameters["composition_model.fc.weight"], w.rank == 2 else { return [] }
        return Set(1...Swift.max(w.shape[1], 1))
    }
    /// Bond features on every pair and, within the bond cutoff, angle features on pairs of bonds (lower estimate).
    public var bytesPerPair: Double { 16 * 1024 }

    public func checkParameters() throws {
        try validate()
        try checkLayerSizes()
        try checkCommonParameters()
    }

    /// The widths of consecutive layers must chain as the forward pass uses them (atom features A, bond features
    /// B, angle features G): a file whose layer sizes disagree is refused at load, instead of trapping in a
    /// matrix product at the first evaluation.
    func checkLayerSizes() throws {
        func fail(_ s: String) -> PotentialSpecError { PotentialSpecError(message: "chgnet model file: \(s)") }
        func shape(_ name: String, rank: Int) throws -> [Int] {
            guard let t = parameters[name] else { throw fail("tensor '\(name)' missing") }
            guard t.rank == rank else { throw fail("'\(name)' has shape \(t.shape), expected rank \(rank)") }
            return t.shape
        }
        func vector(_ name: String, _ n: Int) throws {
            let s = try shape(name, rank: 1)
            guard s == [n] else { throw fail("'\(name)' has shape \(s), expected [\(n)]") }
        }
        /// Checks an MLP `<prefix>.layers.k` reads `input` features and writes `output`.
        func mlp(_ prefix: String, input: Int, output: Int) throws {
            var width = input
            for k in mlpLayers[prefix] ?? [] {
                let name = "\(prefix).layers.\(k).weight"
                let w = try shape(name, rank: 2)
                guard w[1] == width else { throw fail("'\(name)' has shape \(w): it reads \(w[1]) features, the layer before gives \(width)") }
                if parameters["\(prefix).layers.\(k).bias"] != nil { try vector("\(prefix).layers.\(k).bias", w[0]) }
                width = w[0]
            }
            guard width == output else { throw fail("'\(prefix)' gives \(width) features, \(output) are needed") }
        }
        func gated(_ prefix: String, input: Int, output: Int) throws {
            try mlp(prefix + ".mlp_core", input: input, output: output)
            try mlp(prefix + ".mlp_gate", input: input, output: output)
            for n in ["bn1", "bn2"] { for p in ["weight", "bias"] { try vector("\(prefix).\(n).\(p)", output) } }
        }
        let a = try shape("atom_embedding.embedding.weight", rank: 2)[1]
        let b = try shape("bond_embedding.weight", rank: 2)[0]
        let g = try shape("angle_embedding.weight", rank: 2)[0]
        let radialBG = try shape("bond_basis_expansion.rbf_expansion_bg.frequencies", rank: 1)[0]
        guard try shape("bond_weights_ag.weight", rank: 2)[0] == a else { throw fail("bond_weights_ag.weight must give \(a) atom features") }
        let bg = try shape("bond_weights_bg.weight", rank: 2)
        guard bg == [b, radialBG] else { throw fail("bond_weights_bg.weight has shape \(bg), expected [\(b), \(radialBG)]") }
        for l in 0..<config.nConv {
            try gated("atom_conv_layers.\(l).twoBody_atom", input: 2 * a + b, output: a)
            try mlp("atom_conv_layers.\(l).mlp_out", input: a, output: a)
            guard l < config.nConv - 1 else { continue }
            try gated("bond_conv_layers.\(l).twoBody_bond", input: 2 * b + g + a, output: b)
            try mlp("bond_conv_layers.\(l).mlp_out", input: b, output: b)
            if l < config.nConv - 2 { try gated("angle_layers.\(l).twoBody_bond", input: 2 * b + g + a, output: g) }
        }
        if parameters["site_wise.weight"] != nil {
            let w = try shape("site_wise.weight", rank: 2)
            guard w == [1, a] else { throw fail("site_wise.weight has shape \(w), expected [1, \(a)]") }
            if parameters["site_wise.bias"] != nil { try vector("site_wise.bias", 1) }
        }
        for n in ["readout_norm.weight", "readout_norm.bias"] { try vector(n, a) }
        try mlp("mlp", input: a, output: 1)
    }
}
