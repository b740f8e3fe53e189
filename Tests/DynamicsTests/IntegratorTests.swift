import Foundation
import Testing
import Atoms
import Potentials
import Tape
@testable import Dynamics

/// 64-atom diamond silicon at the SW lattice constant.
func silicon64() -> Structure { Structure.diamond(a: 5.431, repeats: 2) }

/// Mean and standard error of a correlated series by block averaging (20 blocks).
func blockMean(_ x: [Double], blocks: Int = 20) -> (mean: Double, error: Double) {
    let m = x.reduce(0, +) / Double(x.count)
    let size = x.count / blocks
    let means = (0..<blocks).map { b in x[(b * size)..<((b + 1) * size)].reduce(0, +) / Double(size) }
    let v = means.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(blocks - 1)
    return (m, (v / Double(blocks)).squareRoot())
}

@Suite("Molecular dynamics")
struct IntegratorTests {
    @Test func unitsMatchASE() {
        // ase.units (CODATA 2014): fs = 0.09822694788464063, kB = 8.617330337217213e-05
        #expect(abs(Units.fs - 0.09822694788464063) < 1e-16)
        #expect(abs(Units.kB - 8.617330337217213e-05) < 1e-18)
    }

    @Test func maxwellBoltzmannHasZeroMomentumAndTheTemperature() {
        var rng = SeededGenerator(seed: 3)
        let masses = (0..<2000).map { $0 % 2 == 0 ? 28.085 : 12.011 }
        let v = MolecularDynamics.maxwellBoltzmann(masses: masses, temperature: 800, rng: &rng)
        var p = [0.0, 0.0, 0.0], ke = 0.0
        for a in 0..<masses.count {
            for k in 0..<3 { p[k] += masses[a] * v[3 * a + k]; ke += 0.5 * masses[a] * v[3 * a + k] * v[3 * a + k] }
        }
        #expect(p.allSatisfy { abs($0) < 1e-10 })
        let t = 2 * ke / (Double(3 * masses.count - 3) * Units.kB)
        // Relative standard deviation √(2/(3N)) ≈ 1.8 %.
        #expect(abs(t / 800 - 1) < 0.06)
    }

    /// Done-when: NVE with SW silicon at 300 K drifts less than 1e-4 eV/atom over 10 ps at 1 fs.
    @Test func velocityVerletConservesEnergyOverTenPicoseconds() {
        let si = silicon64()
        // Started at 600 K from the perfect crystal: equipartition brings it to about 300 K.
        let md = MolecularDynamics(starts: [si], potential: StillingerWeber(), settings: MDSettings(timestep: 1, temperature: 600, thermostat: .none), seed: 7)
        var energies: [Double] = [], temps: [Double] = []
        for k in 1...10_000 {
            md.step([0])
            if k % 10 == 0 { energies.append(md.totalEnergy(0) / 64); temps.append(md.temperature(0)) }
        }
        let e0 = energies.prefix(100).reduce(0, +) / 100, e1 = energies.suffix(100).reduce(0, +) / 100
        let drift = abs(e1 - e0)
        let spread = (energies.max()! - energies.min()!)
        let t = temps.dropFirst(100).reduce(0, +) / Double(temps.count - 100)
        print(String(format: "NVE SW Si64 dt 1 fs, 10 ps: mean T %.1f K, drift (last ps − first ps) %.2e eV/atom, max−min %.2e eV/atom", t, drift, spread))
        #expect(t > 250 && t < 350)
        #expect(drift < 1e-4)
        #expect(spread < 1e-4)
    }

    /// Done-when: Langevin (BAOAB) reaches the target temperature within 2 % over a long run.
    @Test func langevinReachesTheTargetTemperature() {
        let si = silicon64()
        let target = 500.0
        let md = MolecularDynamics(starts: [si, si], potential: StillingerWeber(),
                                   settings: MDSettings(timestep: 1, temperature: target, thermostat: .langevin(friction: 0.01)),
                                   seed: 11, initialTemperature: 0)
        var temps: [Double] = []
        for k in 1...12_000 {
            md.step([0, 1])
            if k > 2000 { temps.append(0.5 * (md.temperature(0) + md.temperature(1))) }
        }
        let (m, err) = blockMean(temps)
        print(String(format: "Langevin SW Si64 ×2 replicas, 10 ps after 2 ps: mean T %.2f K (target %.0f, error of the mean %.2f K, deviation %.2f %%)", m, target, err, 100 * (m / target - 1)))
        #expect(abs(m / target - 1) < 0.02)
    }

    @Test func noseHooverChainConservesItsEnergyAndThermostats() {
        let si = silicon64()
        let target = 500.0
        let md = MolecularDynamics(starts: [si], potential: StillingerWeber(),
                                   settings: MDSettings(timestep: 1, temperature: target, thermostat: .noseHoover(damping: 50, chain: 3)), seed: 5)
        let h0 = md.conservedEnergy(0)
        var temps: [Double] = [], hmax = 0.0
        for k in 1...8000 {
            md.step([0])
            hmax = max(hmax, abs(md.conservedEnergy(0) - h0) / 64)
            if k > 1000 { temps.append(md.temperature(0)) }
        }
        let (m, err) = blockMean(temps)
        print(String(format: "Nosé-Hoover chain SW Si64, 7 ps after 1 ps: mean T %.1f K ± %.1f, conserved energy max deviation %.2e eV/atom", m, err, hmax))
        #expect(hmax < 3e-4)
        #expect(abs(m / target - 1) < 0.05)
    }

    @Test func batchedReplicasFollowTheirOwnPaths() {
        let si = silicon64()
        for thermostat in [Thermostat.none, .langevin(friction: 0.02), .noseHoover(damping: 40, chain: 2)] {
            let settings = MDSettings(timestep: 2, temperature: 900, thermostat: thermostat)
            let together = MolecularDynamics(starts: [si, si, si], potential: StillingerWeber(), settings: settings, seed: 9)
            for _ in 0..<50 { together.step([0, 1, 2]) }
            // Replica 1 alone, from the same initial state.
            let alone = MolecularDynamics(starts: [si, si, si], potential: StillingerWeber(), settings: settings, seed: 9)
            for _ in 0..<50 { alone.step([1]) }
            let a = together.replicas[1], b = alone.replicas[1]
            let dx = zip(a.positions, b.positions).map { abs($0 - $1) }.max()!
            #expect(dx < 1e-9, "\(thermostat.name): \(dx)")
            #expect(alone.replicas[0].step == 0 && together.replicas[0].step == 50)
            #expect(together.replicas[0].positions != together.replicas[1].positions)
        }
    }

    @Test func framesCarryMomentaThatReadBackAsVelocities() throws {
        let md = MolecularDynamics(starts: [silicon64()], potential: StillingerWeber(), settings: MDSettings(timestep: 1, temperature: 300), seed: 2)
        for _ in 0..<5 { md.step([0]) }
        let f = md.frame(0)
        let text = try StructureIO.text([f], format: .extxyz)
        let back = try StructureIO.parse(text, format: .extxyz)[0]
        let v = frameVelocities([back])![0]
        #expect(zip(v, md.replicas[0].velocities).allSatisfy { abs($0 - $1) < 1e-12 })
        #expect(back.info["step"]?.intValue == 5)
        #expect(abs(back.energy! - md.replicas[0].potentialEnergy) < 1e-9)
    }

    @Test func wrappingKeepsTheUnwrappedPath() {
        // A fast atom crosses the cell: wrapped positions stay inside, unwrapped ones continue.
        var s = silicon64()
        s.positions[0, 0] = 10.8
        let md = MolecularDynamics(starts: [s], potential: StillingerWeber(), settings: MDSettings(timestep: 1, temperature: 300, thermostat: .none), seed: 1)
        md.replicas[0].velocities[0] = 0.5
        let x0 = md.unwrappedPositions(0)[0, 0]
        for _ in 0..<20 { md.step([0]) }
        let xw = md.replicas[0].positions[0], xu = md.unwrappedPositions(0)[0, 0]
        #expect(xu > x0 + 0.3)
        #expect(abs(xw - xu) > 10 || (xw >= 0 && xw < 10.862))
    }
}
