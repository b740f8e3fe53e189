import Foundation

/// ASE's units (CODATA 2014, ASE's default): energies in eV, lengths in Å, masses in u, and time in
/// Å·√(u/eV) (≈ 10.18 fs), so that velocities are Å per that unit and momenta m·v are what ASE stores.
public enum Units {
    static let elementaryCharge = 1.6021766208e-19
    static let atomicMassUnit = 1.660539040e-27
    static let boltzmannSI = 1.38064852e-23

    /// Boltzmann constant, eV/K (ase.units.kB).
    public static let kB = boltzmannSI / elementaryCharge
    /// One second in ASE time units, computed as ASE does (ase.units.second).
    public static let second = 1e10 * (elementaryCharge / atomicMassUnit).squareRoot()
    /// One femtosecond in ASE time units (ase.units.fs ≈ 0.09823).
    public static let fs = 1e-15 * second
}
