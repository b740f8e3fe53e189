import Foundation
import Testing
import Atoms
import Potentials
import Tape
@testable import Dynamics

/// An 8-atom diamond cell with every atom displaced a little (seeded).
func rattledSilicon8(seed: UInt64 = 1, amplitude: Double = 0.08) -> Structure {
    var s = Structure.diamond(a: 5.431, repeats: 1)
    var rng = SeededGenerator(seed: seed)
    s.positions = s.positions + rng.normalTensor([8, 3], scale: amplitude)
    return s
}

@Suite("Observables")
struct ObservableTests {
    @Test func crystalRDFCountsFourFirstNeighbours() {
        let si = silicon64()
        let settings = RDFSettings(rMax: 5, bins: 500, sigma: 0.03)
        let g = RadialDistribution.values(si, settings: settings)
        // Coordination number ∫ 4πr²ρ g(r) dr over the first shell (bond 2.3517 Å, next shell 3.840 Å).
        let rho = 64 / si.volume, dr = 0.01
        var n1 = 0.0
        for (k, r) in settings.radii.enumerated() where r < 3.1 { n1 += 4 * Double.pi * r * r * rho * g[k] * dr }
        #expect(abs(n1 - 4) < 1e-3)
        let firstShell = g.indices.filter { settings.radii[$0] < 3.1 }
        let peak = settings.radii[firstShell.max { g[$0] < g[$1] }!]
        #expect(abs(peak - 5.431 * 3.0.squareRoot() / 4) < 0.01)
    }

    @Test func tapedRDFEqualsValuesAndMatchesFiniteDifferences() {
        let s = rattledSilicon8()
        let settings = RDFSettings(rMax: 4, bins: 40, sigma: 0.15)
        let tape = Tape()
        let g = RadialDistribution.differentiable(positions: tape.variable(s.positions), structure: s, settings: settings)
        let v = RadialDistribution.values(s, settings: settings)
        #expect(zip(g.value.array, v).allSatisfy { abs($0 - $1) < 1e-12 * max(1, abs($1)) })
        var rng = SeededGenerator(seed: 2)
        let w = rng.normalTensor([40])
        let report = GradCheck.firstOrder({ xs in (RadialDistribution.differentiable(positions: xs[0], structure: s, settings: settings) * w).sum() },
                                          at: [s.positions], step: 1e-6)
        print("smeared RDF gradient vs finite differences:", report)
        #expect(report.passed(tolerance: 1e-7))
        let second = GradCheck.secondOrder({ xs in (RadialDistribution.differentiable(positions: xs[0], structure: s, settings: settings) * w).sum() },
                                           at: [s.positions])
        #expect(second.passed(tolerance: 1e-6))
    }

    @Test func crystalAnglesPeakAtTheTetrahedralAngle() {
        let adf = AngleDistribution(cutoff: 2.6, bins: 180, sigma: 1)
        let p = adf.values(silicon64())
        let peak = adf.angles[p.indices.max { p[$0] < p[$1] }!]
        #expect(abs(peak - 109.47) < 1)
        #expect(abs(p.reduce(0, +) * 1 - 1) < 1e-6)  // bins of 1°
    }

    @Test func bondDeviationFlagsAStretchedBondLocally() {
        let si = silicon64()
        let bonds = BondSet.detect(si)
        #expect(bonds.count == 128)
        #expect(bonds.referenceLengths.allSatisfy { abs($0 - 2.35169) < 1e-4 })
        let monitor = StabilityMonitor(bonds: bonds, criterion: .training, structure: si)
        #expect(!monitor.check(si.positions).unstable)
        var moved = si.positions
        // Along a bond direction: one bond changes by about 0.3 Å, the others by about 0.1 Å.
        for k in 0..<3 { moved[5, k] += 0.3 / 3.0.squareRoot() }
        let r = monitor.check(moved)
        #expect(r.unstable)
        #expect(r.unstableAtoms.contains(5))
        #expect(r.unstableAtoms.count <= 5)  // atom 5 and the neighbours whose bonds it stretched
        #expect(!StabilityMonitor(bonds: bonds, criterion: .evaluation, structure: si).check(moved).unstable)
        let close = StabilityMonitor(bonds: bonds, criterion: InstabilityCriterion(maxBondDeviation: nil, minimumDistance: 2.0), structure: si)
        #expect(!close.check(si.positions).unstable)
        var squeezed = si.positions
        squeezed[1, 0] -= 0.8; squeezed[1, 1] -= 0.8; squeezed[1, 2] -= 0.8
        #expect(close.check(squeezed).unstable)
        #expect(monitor.check(Tensor(shape: [64, 3], repeating: .nan)).unstable)
    }

    @Test func minimumDistanceAndReferenceLengthsFromFrames() {
        let si = silicon64()
        #expect(abs(minimumDistance(si) - 2.35169) < 1e-4)
        var bonds = BondSet.detect(si)
        var stretched = si
        stretched.positions = stretched.positions * 1.01
        stretched.cell = stretched.cell * 1.01
        bonds.setReferenceLengths(from: [si, stretched])
        #expect(bonds.referenceLengths.allSatisfy { abs($0 - 2.35169 * 1.005) < 1e-4 })
    }

    @Test func velocityAutocorrelationOfAnOscillation() {
        // v(t) = cos(ωt) for every component: C(τ) → cos(ωτ) for many time origins.
        let omega = 0.1
        let frames = (0..<2000).map { t in [Double](repeating: cos(omega * Double(t)), count: 6) }
        let c = velocityAutocorrelation(frames, window: 50)
        #expect(c[0] == 1)
        for lag in [10, 31, 49] { #expect(abs(c[lag] - cos(omega * Double(lag))) < 0.02) }
    }
}
