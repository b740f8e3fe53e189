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

extension CHGNet {
    /// Z = 1…n, n the columns of the AtomRef (composition model) weights: 94 (H–Pu) for CHGNet 0.3.0.
    public var coveredElements: Set<Int>? {
        guard let w = parameters["composition_model.fc.weight"], w.rank == 2 else { return [] }
        return Set(1...Swift.max(w.shape[1], 1))
    }
    /// Bond features on every pair and, within the bond cutoff, angle features on pairs of bonds (lower estimate).
    public var bytesPerPair: Double { 16 * 1024 }
}
