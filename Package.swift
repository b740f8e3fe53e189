// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "relaxft",
    products: [
        .executable(name: "relaxft", targets: ["relaxft"]),
        .library(name: "Tape", targets: ["Tape"]),
        .library(name: "Atoms", targets: ["Atoms"]),
        .library(name: "Potentials", targets: ["Potentials"]),
        .library(name: "Relax", targets: ["Relax"]),
        .library(name: "Loss", targets: ["Loss"]),
        .library(name: "FineTune", targets: ["FineTune"]),
        .library(name: "Dynamics", targets: ["Dynamics"]),
        .library(name: "Cluster", targets: ["Cluster"]),
    ],
    targets: [
        // OpenBLAS (cblas.h) and LAPACKE from Debian's libopenblas-dev and liblapacke-dev.
        .systemLibrary(name: "CLinalg", path: "Sources/CLinalg", providers: [.apt(["libopenblas-dev", "liblapacke-dev"])]),
        .target(name: "Tape", dependencies: ["CLinalg"]),
        // Ranks of a data-parallel job; Open MPI is loaded at run time (dlopen), never linked.
        .target(name: "Cluster"),
        .target(name: "Atoms", dependencies: ["Tape"]),
        .target(name: "Potentials", dependencies: ["Tape", "Atoms"]),
        .target(name: "Relax", dependencies: ["Tape", "Atoms", "Potentials"]),
        .target(name: "Loss", dependencies: ["Tape", "Atoms"]),
        .target(name: "Dynamics", dependencies: ["Tape", "Atoms", "Potentials"]),
        .target(name: "FineTune", dependencies: ["Tape", "Atoms", "Potentials", "Relax", "Loss", "Dynamics", "Cluster"]),
        .executableTarget(name: "relaxft", dependencies: ["Tape", "Atoms", "Potentials", "Relax", "Loss", "FineTune", "Dynamics", "Cluster"]),
        .executableTarget(name: "relaxft-bench", dependencies: ["Tape", "Atoms", "Potentials", "Relax", "Loss", "FineTune", "CLinalg", "Cluster"], path: "Sources/Bench"),
        // Helpers every test target shares: repository paths, scratch directories, running the relaxft binary.
        .target(name: "TestSupport", dependencies: ["Cluster"], path: "Tests/TestSupport"),
        .testTarget(name: "TapeTests", dependencies: ["Tape", "TestSupport"]),
        .testTarget(name: "ClusterTests", dependencies: ["Cluster", "TestSupport"]),
        .testTarget(name: "AtomsTests", dependencies: ["Atoms", "TestSupport"], exclude: ["Malformed"]),
        .testTarget(name: "PotentialsTests", dependencies: ["Potentials", "TestSupport"]),
        .testTarget(name: "RelaxTests", dependencies: ["Relax", "TestSupport"]),
        .testTarget(name: "LossTests", dependencies: ["Loss", "Atoms", "Tape", "TestSupport"]),
        .testTarget(name: "DynamicsTests", dependencies: ["Dynamics", "FineTune", "Relax", "Potentials", "Atoms", "Tape", "TestSupport"]),
        .testTarget(name: "FineTuneTests", dependencies: ["FineTune", "Cluster", "Relax", "Loss", "Potentials", "Atoms", "Tape", "TestSupport"]),
        // Runs the relaxft binary; depending on the executable target makes `swift test` build it.
        .testTarget(name: "CLITests", dependencies: ["relaxft", "Atoms", "Potentials", "Relax", "Dynamics", "Tape", "TestSupport"]),
    ]
)
