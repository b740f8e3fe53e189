import Potentials
import Tape

/// The check after every optimizer step: parameters that went non-finite or out of their physical range (a
/// negative σ, a cutoff beyond the limit) are not taken. Trainers call `rejection` with the updated values
/// before installing them; a non-nil reason means: keep the previous parameters, count the step as skipped.
public enum ParameterGuard {
    /// Why `values` (parameter name → tensor, a subset of the potential's) cannot be installed in
    /// `potential`, or nil when they can.
    public static func rejection(of values: [String: Tensor], for potential: any Potential) -> String? {
        var p = potential
        for (k, v) in values.sorted(by: { $0.key < $1.key }) {
            guard let old = p.parameters[k] else { return "unknown parameter \(k)" }
            guard old.shape == v.shape else { return "parameter \(k) changed shape from \(old.shape) to \(v.shape)" }
            guard v.isFinite else { return "parameter \(k) became non-finite" }
            p.parameters[k] = v
        }
        do { try p.checkParameters() } catch { return "\(error)" }
        return nil
    }
}
