// The gateway on Azure Container Apps.
//
// What this template makes, in the resource group it is deployed to:
// - a user-assigned managed identity for the app. It pulls the image from Azure Container
//   Registry (AcrPull), reads the gateway's secrets from Key Vault (Key Vault Secrets User), and
//   gets Microsoft Entra ID tokens for Voice Live (Cognitive Services User and Foundry User on the
//   AI resource), so no Voice Live key is needed;
// - the container app: external HTTPS ingress to port 8080 (WebSockets included), liveness on
//   /healthz and readiness on /readyz, 2 to 20 replicas scaled on concurrent connections (each
//   call holds one media WebSocket), config.yaml (the file next to this one) mounted at
//   /etc/gateway/config.yaml from a Container Apps secret, the other secrets from Key Vault.
//
// What it expects: a Container Apps environment and a Key Vault (Azure RBAC permission model)
// holding the secrets, both in this resource group. Commands: README.md next to this file.

targetScope = 'resourceGroup'

@description('Name of the container app; also the first label of its default host name.')
@minLength(2)
@maxLength(32)
param appName string = 'voicelive-gateway'

@description('Location of the app and its identity: the environment\'s location.')
param location string = resourceGroup().location

@description('Name of an existing Container Apps environment in this resource group.')
param environmentName string

@description('The gateway image, e.g. myregistry.azurecr.io/voicelive-gateway:0.1.0 (built from deploy/Dockerfile).')
param image string

@description('Name of the Azure Container Registry in this resource group that holds the image. Empty: a public image.')
param registryName string = ''

@description('Voice Live endpoint, e.g. https://<resource>.services.ai.azure.com.')
param voiceLiveEndpoint string

@description('Name of the AI Services resource behind voiceLiveEndpoint, when it is in this resource group: the app\'s identity gets the roles Voice Live needs for Microsoft Entra ID. Empty: grant them yourself, or use a key (AZURE_VOICELIVE_API_KEY in keyVaultSecrets).')
param voiceLiveAccountName string = ''

@description('The https address carriers reach. Empty: the app\'s default address, https://<appName>.<environment domain>.')
param publicUrl string = ''

@description('Azure Communication Services only: the resource\'s immutable id, the audience of its tokens.')
param acsResourceId string = ''

@description('Name of the Key Vault in this resource group (Azure RBAC permission model) that holds the secrets.')
param keyVaultName string

@description('Environment variables read from Key Vault: variable name -> secret name in keyVaultName. GATEWAY_SIGNING_KEY is required; add TWILIO_AUTH_TOKEN, ACS_CONNECTION_STRING, ACS_EVENTGRID_SECRET or AZURE_VOICELIVE_API_KEY as you use them. Every secret named here must exist.')
param keyVaultSecrets object = {
  GATEWAY_SIGNING_KEY: 'gateway-signing-key'
  TWILIO_AUTH_TOKEN: 'twilio-auth-token'
}

@description('Fewest replicas: two, so that one can drain while the other takes calls.')
@minValue(1)
param minReplicas int = 2

@description('Most replicas.')
@minValue(1)
param maxReplicas int = 20

@description('Concurrent connections per replica before one more is added: 60 % of gateway.max_calls (200 in config.yaml).')
@minValue(1)
param concurrentCallsPerReplica int = 120

// Built-in role definitions.
var roleIds = {
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  cognitiveServicesUser: 'a97b65f3-24c7-4388-baec-2e87135dc908'
  foundryUser: '53ca6127-db72-4b80-b1b0-d745d6d5456d'
}
var voiceLiveRoleIds = [
  roleIds.cognitiveServicesUser
  roleIds.foundryUser
]

var configSecretName = 'gateway-config'
var vaultUri = 'https://${keyVaultName}${environment().suffixes.keyvaultDns}/'

// Container Apps secret names are lower case: GATEWAY_SIGNING_KEY -> gateway-signing-key.
var keyVaultSecretRefs = [for item in items(keyVaultSecrets): {
  name: toLower(replace(item.key, '_', '-'))
  keyVaultUrl: '${vaultUri}secrets/${item.value}'
  identity: identity.id
}]
var keyVaultEnv = [for item in items(keyVaultSecrets): {
  name: item.key
  secretRef: toLower(replace(item.key, '_', '-'))
}]

var gatewayPublicUrl = empty(publicUrl) ? 'https://${appName}.${managedEnv.properties.defaultDomain}' : publicUrl

var plainEnv = [
  {
    name: 'AZURE_VOICELIVE_ENDPOINT'
    value: voiceLiveEndpoint
  }
  {
    name: 'GATEWAY_PUBLIC_URL'
    value: gatewayPublicUrl
  }
  {
    // DefaultAzureCredential picks the user-assigned identity by its client id.
    name: 'AZURE_CLIENT_ID'
    value: identity.properties.clientId
  }
  {
    name: 'ACS_RESOURCE_ID'
    value: acsResourceId
  }
  {
    name: 'GATEWAY_LOG_FORMAT'
    value: 'json'
  }
  {
    name: 'GATEWAY_LOG_LEVEL'
    value: 'info'
  }
]

resource managedEnv 'Microsoft.App/managedEnvironments@2025-01-01' existing = {
  name: environmentName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = if (!empty(registryName)) {
  name: registryName
}

resource voiceLiveAccount 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = if (!empty(voiceLiveAccountName)) {
  name: voiceLiveAccountName
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${appName}-id'
  location: location
}

resource secretsReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identity.id, roleIds.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.keyVaultSecretsUser)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource imagePuller 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(registryName)) {
  name: guid(registry.id, identity.id, roleIds.acrPull)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.acrPull)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource voiceLiveUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in voiceLiveRoleIds: if (!empty(voiceLiveAccountName)) {
  name: guid(voiceLiveAccount.id, identity.id, roleId)
  scope: voiceLiveAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}]

resource app 'Microsoft.App/containerApps@2025-01-01' = {
  name: appName
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    environmentId: managedEnv.id
    configuration: {
      // A new revision takes the traffic once ready; the old one's replicas then get SIGTERM and
      // drain their calls (terminationGracePeriodSeconds below).
      activeRevisionsMode: 'Single'
      ingress: {
        external: true
        targetPort: 8080
        // HTTP/1.1 with the WebSocket upgrade (the carriers' media sockets) and HTTP/2.
        transport: 'auto'
        allowInsecure: false
        traffic: [
          {
            latestRevision: true
            weight: 100
          }
        ]
      }
      registries: empty(registryName) ? [] : [
        {
          server: '${registryName}${environment().suffixes.acrLoginServer}'
          identity: identity.id
        }
      ]
      secrets: concat([
        {
          name: configSecretName
          value: loadTextContent('config.yaml')
        }
      ], keyVaultSecretRefs)
    }
    template: {
      // SIGTERM -> the gateway refuses new calls, /readyz answers 503, calls in progress end
      // (gateway.drain_timeout_s = 570 in config.yaml), then it exits. This leaves 30 s to spare.
      terminationGracePeriodSeconds: 600
      containers: [
        {
          name: 'gateway'
          image: image
          command: [
            'gateway'
          ]
          args: [
            'serve'
            '--config'
            '/etc/gateway/config.yaml'
            '--host'
            '0.0.0.0'
            '--port'
            '8080'
          ]
          // Benchmark: 0.18-0.25 % of a core and ~60 KiB per call; 200 calls ~0.4 core, ~94 MiB. 1 CPU
          // leaves room for TLS to Voice Live and bursts; 2 GiB is what 1 CPU comes with.
          resources: {
            cpu: json('1.0')
            memory: '2Gi'
          }
          env: concat(plainEnv, keyVaultEnv)
          probes: [
            {
              type: 'Startup'
              httpGet: {
                path: '/healthz'
                port: 8080
              }
              periodSeconds: 3
              failureThreshold: 10
            }
            {
              // 200 while the process runs, draining included. A restart ends the replica's
              // calls: only after a minute without an answer.
              type: 'Liveness'
              httpGet: {
                path: '/healthz'
                port: 8080
              }
              periodSeconds: 10
              timeoutSeconds: 5
              failureThreshold: 6
            }
            {
              // 503 while draining or at gateway.max_calls: no new connections for this replica.
              type: 'Readiness'
              httpGet: {
                path: '/readyz'
                port: 8080
              }
              periodSeconds: 5
              timeoutSeconds: 3
              failureThreshold: 2
            }
          ]
          volumeMounts: [
            {
              volumeName: 'config'
              mountPath: '/etc/gateway'
            }
          ]
        }
      ]
      scale: {
        minReplicas: minReplicas
        maxReplicas: maxReplicas
        rules: [
          {
            name: 'concurrent-calls'
            http: {
              metadata: {
                concurrentRequests: string(concurrentCallsPerReplica)
              }
            }
          }
        ]
      }
      volumes: [
        {
          name: 'config'
          storageType: 'Secret'
          secrets: [
            {
              secretRef: configSecretName
              path: 'config.yaml'
            }
          ]
        }
      ]
    }
  }
  dependsOn: [
    secretsReader
    imagePuller
    voiceLiveUser
  ]
}

@description('Host name of the app: point carriers at https://<fqdn>/twilio/voice and https://<fqdn>/acs/incoming.')
output fqdn string = app.properties.configuration.ingress.fqdn

@description('GATEWAY_PUBLIC_URL as the replicas see it.')
output publicUrl string = gatewayPublicUrl

@description('Principal id of the app\'s identity, for role assignments made elsewhere (e.g. Voice Live in another resource group).')
output identityPrincipalId string = identity.properties.principalId
