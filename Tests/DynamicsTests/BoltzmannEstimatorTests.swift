import Foundation
import Testing
import Atoms
import Potentials
import Tape
@testable import Dynamics

/// Per-sample ∂U/∂θ of U_s = Σ_k θ_k φ_k(x_s) recorded on tapes (chunks of 500 samples), as [S, P].
func tapeGradients(_ x: [Double], _ theta: [Double], _ features: [(Double) -> Double]) -> Tensor {
    var rows: [Double] = []
    var start = 0
    while start < x.count {
        let chunk = Array(x[start..<min(start + 500, x.count)])
        let tape = Tape()
        let leaves = theta.map { tape.variable($0) }
        var u = Variable(constant: Tensor.zeros([chunk.count]))
        for (k, phi) in features.enumerated() { u = u + leaves[k] * Variable(constant: Tensor(chunk.map(phi))) }
        rows += BoltzmannEstimator.perSampleGradients(of: u, wrt: leaves, tape: tape).array
        start += 500
    }
    return Tensor(shape: [x.count, theta.count], rows)
}

@Suite("Boltzmann estimator")
struct BoltzmannEstimatorTests {
    /// U = θx²/2 sampled exactly: ⟨x²⟩ = kT/θ, so ∂⟨x²⟩/∂θ = −kT/θ².
    @Test func harmonicOscillatorMatchesTheClosedForm() {
        let temperature = 600.0, theta = 3.0
        let kT = Units.kB * temperature, beta = BoltzmannEstimator.beta(temperature: temperature)
        var rng = SeededGenerator(seed: 42)
        let x = (0..<20_000).map { _ in (kT / theta).squareRoot() * rng.normal() }
        let g = tapeGradients(x, [theta], [{ $0 * $0 / 2 }])
        let (jac, se) = BoltzmannEstimator.jacobian(observables: Tensor(shape: [x.count, 1], x.map { $0 * $0 }), energyGradients: g, beta: beta)
        let exact = -kT / (theta * theta)
        print(String(format: "harmonic: estimator %.6e ± %.1e, exact %.6e (%.2f standard errors)", jac.scalar, se.scalar, exact, (jac.scalar - exact) / se.scalar))
        #expect(abs(jac.scalar - exact) < 4 * se.scalar)
        #expect(se.scalar < 0.05 * abs(exact))
    }

    /// U = a x²/2 + b x⁴/4 sampled exactly (Gaussian proposals, accepted with e^{−βbx⁴/4}); the exact
    /// ∂⟨x²⟩/∂a, ∂⟨x²⟩/∂b come from finite differences of ⟨x²⟩(a, b) by quadrature.
    @Test func quarticWellMatchesQuadratureInTwoParameters() {
        let beta = 2.0, a = 1.5, b = 0.7
        func meanX2(_ a: Double, _ b: Double) -> Double {
            var z = 0.0, m = 0.0
            let h = 1e-3
            for i in -8000...8000 {
                let x = Double(i) * h
                let w = exp(-beta * (a * x * x / 2 + b * x * x * x * x / 4))
                z += w; m += x * x * w
            }
            return m / z
        }
        let eps = 1e-5
        let exact = [(meanX2(a + eps, b) - meanX2(a - eps, b)) / (2 * eps), (meanX2(a, b + eps) - meanX2(a, b - eps)) / (2 * eps)]
        var rng = SeededGenerator(seed: 7)
        var x: [Double] = []
        while x.count < 40_000 {
            let y = (1 / (beta * a)).squareRoot() * rng.normal()
            if rng.uniform() < exp(-beta * b * y * y * y * y / 4) { x.append(y) }
        }
        let g = tapeGradients(x, [a, b], [{ $0 * $0 / 2 }, { $0 * $0 * $0 * $0 / 4 }])
        let (jac, se) = BoltzmannEstimator.jacobian(observables: Tensor(shape: [x.count, 1], x.map { $0 * $0 }), energyGradients: g, beta: beta)
        for k in 0..<2 {
            print(String(format: "quartic ∂⟨x²⟩/∂θ_%d: estimator %.5f ± %.5f, quadrature %.5f", k, jac[0, k], se[0, k], exact[k]))
            #expect(abs(jac[0, k] - exact[k]) < 4 * se[0, k])
        }
    }

    /// The training gradient Σ_s c_s ∂U_s/∂θ (one backward pass) equals the loss gradient contracted from
    /// the per-sample Jacobian; per-sample ∂U/∂θ of SW agree with finite differences.
    @Test func lossGradientEqualsTheContractedJacobianForStillingerWeber() {
        let si = silicon64()
        let sw = StillingerWeber()
        let md = MolecularDynamics(starts: [si, si], potential: sw, settings: MDSettings(timestep: 2, temperature: 1200), seed: 4)
        var frames: [Structure] = []
        for k in 1...60 { md.step([0, 1]); if k % 10 == 0 { frames += [md.frame(0), md.frame(1)] } }
        let settings = RDFSettings(rMax: 4.5, bins: 45, sigma: 0.1)
        let obs = Tensor(shape: [frames.count, 45], frames.flatMap { RadialDistribution.values($0, settings: settings) })
        let reference = RadialDistribution.values(si, settings: settings).map { 0.9 * $0 + 0.05 }
        let names = ["sigma", "lambda", "epsilon"]
        let beta = BoltzmannEstimator.beta(temperature: 1200)
        let g = BoltzmannEstimator.energyGradients(sw, frames: frames, names: names, batch: 4)
        let (jac, _) = BoltzmannEstimator.jacobian(observables: obs, energyGradients: g, beta: beta)
        let (loss, mean, c) = BoltzmannEstimator.lossCoefficients(observables: obs, reference: reference, beta: beta)
        let fast = BoltzmannEstimator.weightedEnergyGradient(sw, frames: frames, coefficients: c, names: names, batch: 5)
        #expect(loss > 0)
        for (p, n) in names.enumerated() {
            var viaJacobian = 0.0
            for k in 0..<45 { viaJacobian += 2 / 45 * (mean[k] - reference[k]) * jac[k, p] }
            #expect(abs(fast[n]!.scalar - viaJacobian) <= 1e-10 * max(abs(viaJacobian), 1e-12), "\(n): \(fast[n]!.scalar) vs \(viaJacobian)")
        }
        // ∂U/∂θ of frame 3 against central differences of the energy.
        for (p, n) in names.enumerated() {
            let h = 1e-6 * sw.parameters[n]!.scalar
            func energy(_ d: Double) -> Double {
                var m = sw
                m.parameters[n] = Tensor(scalar: sw.parameters[n]!.scalar + d)
                return m.evaluate(AtomicSystem(frames[3], cutoff: m.cutoff + 0.5), positions: frames[3].positions, cells: frames[3].cell).energy
            }
            let fd = (energy(h) - energy(-h)) / (2 * h)
            #expect(abs(g[3, p] - fd) < 1e-6 * max(abs(fd), 1), "\(n): \(g[3, p]) vs \(fd)")
        }
    }
}
