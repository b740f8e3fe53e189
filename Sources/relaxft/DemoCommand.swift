import Foundation
import Tape

let demoCommand = Command(
    spec: CommandSpec(
        name: "demo", summary: "differentiate a small potential and print the finite-difference agreement",
        usage: "[--seed N] [--json] [--quiet]",
        options: [
            Vocabulary.seed.detail("of the random cluster"),
            Vocabulary.json.detail("the relative errors as one object"),
            Vocabulary.quiet.detail("only the verdict line"),
        ]),
    run: runDemo)

/// Lennard-Jones on an 8-atom cluster: forces from the tape, Hessian-vector products by double backward and
/// the mixed derivative ∂²E/∂x∂σ, each against central finite differences.
func runDemo(_ args: ParsedArguments) throws -> Int32 {
    let seed = try seedOption(args)
    var rng = SeededGenerator(seed: seed)
    var x = Tensor.zeros([8, 3])
    for a in 0..<8 { for k in 0..<3 { x[a, k] = Double((a >> k) & 1) * 1.12 + 0.05 * rng.normal() } }
    func energy(_ v: [Variable]) -> Variable {
        var ii: [Int] = [], jj: [Int] = []
        for i in 0..<8 { for j in (i + 1)..<8 { ii.append(i); jj.append(j) } }
        let r = (v[0].gatherRows(jj) - v[0].gatherRows(ii)).norm()
        let s6 = (v[1] / r).pow(6)
        return ((s6 * s6 - s6) * 4).sum()
    }
    let inputs = [x, Tensor(scalar: 1.0)]
    let first = GradCheck.firstOrder(energy, at: inputs)
    let hvp = GradCheck.secondOrder(energy, at: inputs, seed: seed)
    let mixed = GradCheck.secondOrder(energy, at: inputs, direction: [Tensor.zeros([8, 3]), Tensor(scalar: 1)])
    let ok = first.passed(tolerance: 1e-6) && hvp.passed(tolerance: 1e-6) && mixed.passed(tolerance: 1e-6)
    if args.has("json") {
        print(jsonObject([("seed", "\(seed)"), ("forces", jsonNumber(first.relativeErrors[0])), ("dE_dsigma", jsonNumber(first.relativeErrors[1])),
                          ("hessian_vector_product", jsonNumber(hvp.maxRelativeError)), ("mixed", jsonNumber(mixed.relativeErrors[0])), ("agreement", "\(ok)")]))
        return ok ? 0 : 1
    }
    if !args.has("quiet") {
        print("Lennard-Jones, 8 atoms (seed \(seed)): tape derivatives vs central finite differences")
        print("  quantity                         max relative error")
        print("  forces −∂E/∂x                    \(String(format: "%.2e", first.relativeErrors[0]))")
        print("  ∂E/∂σ                            \(String(format: "%.2e", first.relativeErrors[1]))")
        print("  Hessian-vector product (x, σ)    \(String(format: "%.2e", hvp.maxRelativeError))")
        print("  mixed ∂²E/∂x∂σ                   \(String(format: "%.2e", mixed.relativeErrors[0]))")
    }
    print(ok ? "agreement within 1e-6: yes" : "agreement within 1e-6: NO")
    return ok ? 0 : 1
}
